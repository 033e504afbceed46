"""Pairwise preference losses (DPO, cDPO, offset DPO, IPO, hinge, SimPO) and the RRHF ranking loss.

Each pairwise loss is declared once, in :data:`PAIRWISE_LOSSES`: its function, whether it sees
length-averaged log-probs by default, and whether it needs a reference model. The trainer, the CLIs,
the checkers, the grader and the widgets read that declaration; no other module names a loss.

All pairwise losses take four (B,) tensors of *sequence* log-probabilities of the response tokens and
return one loss per pair, shape (B,): the caller takes the mean. Whether those log-probs are summed
or averaged over tokens is the caller's choice (``sequence_logps(..., average=...)``); see each
docstring for what the references do.

Notation: ``h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)``, the difference of
log-ratios ("h" in the IPO paper, Azar et al. 2023).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .checks import check_candidates, check_finite, check_logps, check_positive


def log_ratio_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)). All (B,) -> (B,)."""
    check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    offset: float = 0.0,
) -> torch.Tensor:
    """DPO: ``-(1-eps) * logsigmoid(z) - eps * logsigmoid(-z)`` with ``z = beta * h - offset``.

    Rafailov et al. 2023 (arXiv:2305.18290), Eq. 7 when ``label_smoothing = offset = 0``.
    ``label_smoothing = eps`` is conservative DPO (cDPO, Mitchell's note: labels flipped with rate eps).
    ``offset = m`` is the offset variant (Llama 2's reward-model margin; ODPO).
    Computed as ``softplus(-z) = -logsigmoid(z)``, which stays finite where ``-log(sigmoid(z))``
    overflows (z < -88 in fp32).
    Summed log-probs are the paper's and TRL's ``loss_type="sigmoid"`` convention.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: (B,).
        beta: > 0, the KL coefficient; the implicit reward is ``beta * log-ratio``.
        label_smoothing: eps in [0, 0.5).
        offset: m, a constant subtracted from ``beta * h``.

    Returns:
        (B,) per-pair losses.
    """
    beta = check_positive("beta", beta)
    eps = check_finite("label_smoothing", label_smoothing)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    offset = check_finite("offset", offset)
    h = log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    z = beta * h - offset  # (B,)
    # -logsigmoid(z) == softplus(-z): the same stable function, and cheaper on small CPU tensors
    loss = F.softplus(-z)
    if eps == 0.0:  # no smoothing term at all: 0 * softplus(z) is NaN once beta * h overflows to inf
        return loss
    return (1.0 - eps) * loss + eps * F.softplus(z)


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> torch.Tensor:
    """IPO: ``(h - 1/(2*beta))**2``.

    Azar et al. 2023 (arXiv:2310.12036), Eq. 17, the sampled loss for Psi = identity; ``beta`` is the
    paper's tau (TRL names it beta too). The margin h has a finite target 1/(2 beta): the gradient
    ``2 (h - 1/(2 beta))`` changes sign above it, which is IPO's regularisation.

    Summed or averaged log-probs: the formula is the same, the numbers differ. Applied to *averaged*
    log-probs (``sequence_logps(..., average=True)``) it equals TRL's ``loss_type="ipo"`` (TRL divides
    each side's log-ratio by its length; the course's default for IPO). Applied to *summed*
    log-probs it equals Mitchell's reference code (``preference_loss(..., ipo=True)``).

    Args:
        the four (B,) log-prob tensors, as for :func:`dpo_loss`.
        beta: tau > 0.

    Returns:
        (B,) per-pair losses.
    """
    beta = check_positive("beta", beta)
    h = log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> torch.Tensor:
    """Hinge on the log-ratio margin: ``max(0, 1 - beta * h)``.

    SLiC/RSO (Zhao et al. 2023; Liu et al. 2023, arXiv:2309.06657); TRL's ``loss_type="hinge"``.
    Its gradient is exactly zero once ``h >= 1/beta``. Summed log-probs, as in TRL.

    Returns:
        (B,) per-pair losses.
    """
    beta = check_positive("beta", beta)
    h = log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return torch.relu(1.0 - beta * h)


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
) -> torch.Tensor:
    """SimPO: ``-logsigmoid(beta * (policy_chosen - policy_rejected) - gamma)``, no reference model.

    Meng et al. 2024 (arXiv:2405.14734), Eq. 6, on *averaged* log-probs (``sequence_logps(..., average=True)``):
    the implicit reward ``beta / |y| * log pi(y | x)`` is the policy's length-normalised log-probability (RRHF's
    Eq. 1 score times beta), and gamma > 0 is a target reward margin. TRL's ``CPOTrainer(loss_type="simpo")``
    computes the same (``simpo_gamma``, default 0.5). The reference tensors are accepted and ignored, so that
    SimPO has the pairwise signature; the trainer passes None for them.

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) averaged response log-probs.
        ref_chosen_logps, ref_rejected_logps: ignored (None from the trainer).
        beta: > 0, the reward scale (the paper uses 2.0 to 2.5).
        gamma: the target margin (finite).

    Returns:
        (B,) per-pair losses.
    """
    beta = check_positive("beta", beta)
    gamma = check_finite("gamma", gamma)
    check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    return F.softplus(-(beta * (policy_chosen_logps - policy_rejected_logps) - gamma))


#: A pairwise loss: four (B,) log-prob tensors and ``beta`` (keyword) -> (B,) losses.
PairwiseLoss = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """Everything the library needs to know about one pairwise loss (one entry of :data:`PAIRWISE_LOSSES`).

    ``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta)`` -> (B,);
    ``average_logps``: whether it sees length-averaged log-probs unless the caller says otherwise;
    ``needs_reference``: False for a reference-free loss, which is given ``None`` for the two reference
    tensors (the trainer then runs no reference forward pass); ``eq11_optimum``: its population optimum is
    Azar et al.'s Eq. 11 with Psi = identity (IPO), so ``compare`` reports Eq. 11's margins beside it.
    Calling a spec calls its function.
    """

    name: str
    fn: PairwiseLoss
    average_logps: bool = False
    needs_reference: bool = True
    eq11_optimum: bool = False

    def __call__(self, *logps: torch.Tensor, **hyperparameters) -> torch.Tensor:
        return self.fn(*logps, **hyperparameters)


#: The one declaration of each pairwise loss. Adding a loss is one entry here, plus its test.
PAIRWISE_LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("dpo", dpo_loss),  # summed log-probs: the DPO paper, TRL's loss_type="sigmoid"
        LossSpec("ipo", ipo_loss, average_logps=True, eq11_optimum=True),  # averaged: TRL's loss_type="ipo"
        LossSpec("hinge", hinge_loss),  # summed, as TRL's loss_type="hinge"
        LossSpec("simpo", simpo_loss, average_logps=True, needs_reference=False),  # Meng et al. 2024, Eq. 6
    )
}


def loss_spec(loss: str | PairwiseLoss | LossSpec) -> LossSpec:
    """The :class:`LossSpec` of ``loss``: a name in :data:`PAIRWISE_LOSSES`, a spec, or a callable with the
    library losses' signature (taken as a loss on summed log-probs that needs a reference).
    Raises ValueError naming the choices for anything else."""
    if isinstance(loss, LossSpec):
        return loss
    if isinstance(loss, str) and loss in PAIRWISE_LOSSES:
        return PAIRWISE_LOSSES[loss]
    if callable(loss) and not isinstance(loss, str):
        return LossSpec(getattr(loss, "__name__", "custom"), loss)
    raise ValueError(f"loss must be one of {sorted(PAIRWISE_LOSSES)} or a callable, got {loss!r}")


def resolve_loss(loss: str | PairwiseLoss | LossSpec) -> PairwiseLoss:
    """The function of ``loss`` (see :func:`loss_spec`)."""
    return loss_spec(loss).fn


def rrhf_scores(
    candidate_logps: torch.Tensor, candidate_lengths: torch.Tensor, *, length_penalty: float = 1.0
) -> torch.Tensor:
    """RRHF score ``p_i = logp_i / |y_i| ** length_penalty`` (Yuan et al. 2023, Eq. 1). (B, K) -> (B, K)."""
    check_candidates(candidate_logps, candidate_lengths)
    length_penalty = check_finite("length_penalty", length_penalty)
    return candidate_logps / candidate_lengths.to(candidate_logps.dtype) ** length_penalty


def reward_order_mask(candidate_rewards: torch.Tensor) -> torch.Tensor:
    """The pairs RRHF's rank loss counts (Yuan et al. 2023, Eq. 2): ``worse[b, i, j] = r_i < r_j``. (B, K) -> (B, K, K).

    Strict, so ties in reward never count; compared in the rewards' own dtype (casting them to bf16
    log-probs could turn close rewards into ties).
    """
    return candidate_rewards.unsqueeze(2) < candidate_rewards.unsqueeze(1)


def rrhf_loss_terms(
    candidate_logps: torch.Tensor,
    candidate_lengths: torch.Tensor,
    candidate_rewards: torch.Tensor,
    *,
    length_penalty: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two RRHF terms separately: ``(rank, sft)``, each (B,).

    rank = sum over pairs with r_i < r_j of max(0, p_i - p_j)   (Eq. 2; ties in reward never count)
    sft  = -logp of the highest-reward candidate                (Eqs. 3-4; summed over its tokens)
    with p the length-normalised score of :func:`rrhf_scores` (Eq. 1).
    """
    check_candidates(candidate_logps, candidate_lengths, candidate_rewards)
    length_penalty = check_finite("length_penalty", length_penalty)
    scores = candidate_logps / candidate_lengths.to(candidate_logps.dtype) ** length_penalty  # (B, K), Eq. 1
    worse = reward_order_mask(candidate_rewards)  # (B, K, K): candidate i has a lower reward than j
    score_gap = scores.unsqueeze(2) - scores.unsqueeze(1)  # (B, K, K): p_i - p_j
    rank = (torch.relu(score_gap) * worse.to(scores.dtype)).sum(dim=(1, 2))  # (B,)
    best = candidate_rewards.argmax(dim=1, keepdim=True)  # (B, 1)
    sft = -candidate_logps.gather(1, best).squeeze(1)  # (B,)
    return rank, sft


def rrhf_loss(
    candidate_logps: torch.Tensor,
    candidate_lengths: torch.Tensor,
    candidate_rewards: torch.Tensor,
    *,
    length_penalty: float = 1.0,
    sft_weight: float = 1.0,
) -> torch.Tensor:
    """RRHF: ``L = L_rank + sft_weight * L_ft`` (Yuan et al. 2023, arXiv:2304.05302, Eq. 5).

    The policy scores its own candidates (no reference model): ``p_i = logp_i / |y_i|**length_penalty``
    (Eq. 1; ``length_penalty=1`` is the paper's length-normalised average; the official code's default is
    1 too, but it divides by the padded width, see :mod:`course_lib.maths.rrhf_official`).
    ``L_rank = sum_{r_i < r_j} max(0, p_i - p_j)`` (Eq. 2); ``L_ft = -logp(y_best)`` with
    ``y_best = argmax_i r_i`` summed over its tokens (Eqs. 3-4; the official code divides that sum by the
    padded width instead). The paper weighs the two terms equally.

    Args:
        candidate_logps: (B, K) *summed* response log-probs under the policy.
        candidate_lengths: (B, K) number of response tokens, > 0.
        candidate_rewards: (B, K) rewards (any scale: only their order matters).
        length_penalty: exponent of the length in the score.
        sft_weight: weight of the SFT term.

    Returns:
        (B,) per-prompt losses. Use :func:`rrhf_loss_terms` for the two terms separately.
    """
    sft_weight = check_finite("sft_weight", sft_weight, minimum=0.0)
    rank, sft = rrhf_loss_terms(candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty)
    return rank + sft_weight * sft
