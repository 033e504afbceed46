"""The loop layer: the device, scoring a model on encoded rows, the training loops and held-out evaluation.
Imports the maths and toy-world layers.
"""
