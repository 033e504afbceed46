"""The notebooks' explorers, one module each, all drawn on the shared blitting canvas (``canvas``):
``rank_loss`` (18.1, RRHF's rank loss), ``margin_loss`` (18.2, every pairwise loss against h) and
``bandit_tau`` (18.2, the IPO bandit at one tau).
"""
