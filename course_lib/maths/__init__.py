"""The maths layer: pure functions on tensors; imports only torch and the standard library.

``logprobs`` (token and sequence log-probs), ``losses`` (DPO, IPO, hinge, RRHF), ``metrics`` (TRL's
implicit rewards and metric keys), ``kl`` (KL estimators, exact sequence KL), ``bandit`` (the IPO
bandit's closed forms), ``ipo_optimum`` (win rates and IPO's Eq. 11 margins) and ``checks`` (the input
validation they share).
"""
