"""The toy world: the sentiment task and its reward, the data and its loaders, tokenizer and models,
sampling, the data build, and the IPO paper's bandit. Imports the maths layer only.
"""
