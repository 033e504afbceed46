"""The teaching layer: plots, the notebooks' widgets and the exercise checkers. Imports any layer below."""
