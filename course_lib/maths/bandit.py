"""The closed-form maths of the IPO paper's toy bandit (Azar et al. 2023, arXiv:2310.12036, Sec. 5.4).

A "response" is one of ``n`` actions and there is no prompt; the policy is ``pi = softmax(theta)``.
This module holds what is exact and needs no training: the input checks, the KL from the reference
(a sum over the ``n`` actions) and IPO's optimum in closed form. The bandit world that trains on it
(Adam on ``theta``, the stored sweep) is :mod:`course_lib.toyworld.bandit`.
"""

from collections.abc import Sequence

import torch

from .checks import check_int, check_positive


def check_preferences(preferences, n_actions: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate ``preferences`` (a non-empty list of (winner, loser) index pairs).

    Returns (winners (P,), losers (P,), n_actions)."""
    try:
        pairs = [(winner, loser) for winner, loser in preferences]
    except (TypeError, ValueError):
        raise TypeError(
            f"preferences must be a list of (winner, loser) action-index pairs, got {preferences!r}"
        ) from None
    if not pairs:
        raise ValueError("preferences must hold at least one (winner, loser) pair, got an empty list")
    pairs = [
        (check_int(f"preferences[{i}][0]", w, minimum=0), check_int(f"preferences[{i}][1]", l, minimum=0))
        for i, (w, l) in enumerate(pairs)
    ]
    for w, l in pairs:
        if w == l:
            raise ValueError(f"preferences: a pair must compare two different actions, got ({w}, {l})")
    highest = max(max(p) for p in pairs)
    if n_actions is None:
        n_actions = highest + 1
    elif highest >= n_actions:
        raise ValueError(f"preferences use action {highest}, but ref_probs has only {n_actions} actions")
    return torch.tensor([w for w, _ in pairs]), torch.tensor([l for _, l in pairs]), n_actions


def bandit_ref_logps(ref_probs, n_actions: int | None) -> tuple[torch.Tensor, int]:
    """Reference log-probs (n,), uniform when ``ref_probs`` is None."""
    if ref_probs is None:
        if n_actions is None:
            raise ValueError("n_actions is needed when ref_probs is None")
        return torch.full((n_actions,), -torch.log(torch.tensor(float(n_actions))).item()), n_actions
    ref = torch.as_tensor(ref_probs, dtype=torch.float32)
    if ref.dim() != 1 or ref.numel() < 2:
        raise ValueError(f"ref_probs must be a 1-D tensor of n >= 2 probabilities, got shape {tuple(ref.shape)}")
    if not bool(ref.isfinite().all()) or bool((ref <= 0).any()) or abs(float(ref.sum()) - 1.0) > 1e-4:
        raise ValueError(f"ref_probs must be finite, strictly positive and sum to 1, got {ref.tolist()}")
    return ref.log(), ref.numel()


def bandit_kl(probs: torch.Tensor, ref_probs=None) -> torch.Tensor:
    """Exact ``KL(pi || pi_ref) = sum_a pi(a) log(pi(a) / pi_ref(a))`` over the last dim.

    Args:
        probs: (..., n) policy probabilities (e.g. the (steps, n) output of :func:`train_bandit`).
        ref_probs: (n,) reference probabilities; None means uniform.
    Returns:
        (...,) the KL in nats (0 * log 0 counts as 0).
    """
    probs = torch.as_tensor(probs, dtype=torch.float32)
    if isinstance(ref_probs, torch.Tensor) and ref_probs.device != probs.device:
        raise ValueError(f"probs (on {probs.device}) and ref_probs (on {ref_probs.device}) must be on one device")
    if probs.dim() == 0 or probs.shape[-1] < 2:
        raise ValueError(f"probs must have shape (..., n) with n >= 2 actions, got {tuple(probs.shape)}")
    sums = probs.sum(-1)
    if not bool(probs.isfinite().all()) or bool((probs < 0).any()) or bool(((sums - 1).abs() > 1e-3).any()):
        worst = (sums - 1).abs().nan_to_num(nan=float("inf")).argmax().item()
        raise ValueError(
            "probs must be probability distributions over the last dim (finite, >= 0, summing to 1); got a row "
            f"summing to {sums.flatten()[worst].item():.6g}, min entry {probs.min().item():.6g}"
        )
    ref_logps, _ = bandit_ref_logps(ref_probs, probs.shape[-1])
    if ref_logps.numel() != probs.shape[-1]:
        raise ValueError(f"probs has {probs.shape[-1]} actions but ref_probs has {ref_logps.numel()}")
    terms = torch.xlogy(probs, probs) - probs * ref_logps.to(probs.device)  # (..., n)
    return terms.sum(-1)


def ipo_bandit_optimum(preferences: Sequence[tuple[int, int]], *, beta: float, ref_probs=None) -> torch.Tensor:
    """IPO's optimal policy on a bandit, in closed form.

    With pairs drawn uniformly from ``preferences``, IPO's population loss (Azar et al. 2023, Eq. 17 in
    expectation) is ``mean over pairs (w, l) of (u_w - u_l - 1/(2 beta))**2`` with
    ``u_a = log pi(a) - log pi_ref(a)`` (the softmax normaliser cancels in each difference). It is a
    least-squares problem on the comparison graph: ``A u = b`` with one row ``e_w - e_l`` per pair and
    ``b = 1/(2 beta)``. ``u`` is fixed up to a constant (the gauge), which the softmax removes:
    ``pi = softmax(log pi_ref + u)``. Repeated pairs weigh more, as they do when sampled.

    For D1 = {(a,b), (b,c), (a,c)} and a uniform reference: ``u_a - u_b = u_b - u_c = 1/(3 beta)``.
    For one pair (a, b): ``pi(a) = sigmoid(1/(2 beta))`` (Sec. 5.3.1).

    Args:
        preferences: (winner, loser) action-index pairs.
        beta: tau > 0.
        ref_probs: (n,) reference probabilities; None means uniform.
    Returns:
        (n_actions,) float32 probabilities.
    Raises:
        ValueError: if the comparison graph does not connect all n actions; then the optimum is not
            unique (e.g. the paper's {(a,b), (b,a)} says nothing about c).
    """
    beta = check_positive("beta", beta)
    ref_n = None if ref_probs is None else torch.as_tensor(ref_probs).numel()
    winners, losers, n_actions = check_preferences(preferences, ref_n)
    ref_logps, n_actions = bandit_ref_logps(ref_probs, n_actions)
    incidence = torch.zeros(len(winners), n_actions, dtype=torch.float64)  # (P, n): one row e_w - e_l per pair
    incidence[torch.arange(len(winners)), winners] = 1.0
    incidence[torch.arange(len(winners)), losers] = -1.0
    if torch.linalg.matrix_rank(incidence) < n_actions - 1:  # rank n - (number of connected components)
        raise ValueError(
            "preferences must connect all actions for IPO's optimum to be unique; "
            f"got {list(zip(winners.tolist(), losers.tolist()))} over {n_actions} actions"
        )
    target = torch.full((len(winners), 1), 1.0 / (2.0 * beta), dtype=torch.float64)  # (P, 1)
    u = (torch.linalg.pinv(incidence) @ target).squeeze(1)  # (n,) minimum-norm least squares
    return (ref_logps.double() + u).softmax(-1).float()
