"""The maths layer: pure functions on tensors; imports only torch and the standard library.

``logprobs`` (token and sequence log-probs), ``losses`` (the pairwise losses' registry, RRHF), ``metrics``
(TRL's implicit rewards and metric keys), ``kl`` (KL estimators, exact sequence KL), ``bandit`` (the IPO
bandit's closed forms), ``ipo_optimum`` (win rates and IPO's Eq. 11 margins), ``rrhf_official``
(the official RRHF code's loss) and ``checks`` (the input checks of every public function).
"""
