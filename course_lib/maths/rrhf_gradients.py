"""The gradient each RRHF candidate receives from each term, in closed form (Yuan et al. 2023, Eqs. 1-5).

With ``p_i = logp_i / |y_i| ** length_penalty`` (Eq. 1) and ``L_rank = sum_{r_i < r_j} max(0, p_i - p_j)``
(Eq. 2), the derivative with respect to candidate i's summed log-prob is a count divided by its length:

    dL_rank / dlogp_i = (#{j: r_i < r_j, p_i > p_j} - #{j: r_j < r_i, p_j > p_i}) / |y_i| ** length_penalty

(positive: gradient descent pushes the candidate DOWN; negative: UP), and the SFT term
``sft_weight * L_ft = -sft_weight * logp_best`` (Eqs. 3-4) gives ``-sft_weight`` to the best candidate
only (the first highest reward, as ``argmax`` picks it) and 0 to the others.
"""

import torch

from .checks import check_candidates, check_finite
from .losses import reward_order_mask


def rrhf_candidate_gradients(
    candidate_logps: torch.Tensor,
    candidate_lengths: torch.Tensor,
    candidate_rewards: torch.Tensor,
    *,
    length_penalty: float = 1.0,
    sft_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rank_grad, sft_grad)``: d L_rank / d logp and d (sft_weight * L_ft) / d logp, each (B, K).

    Args:
        candidate_logps: (B, K) summed response log-probs.
        candidate_lengths: (B, K) response lengths in tokens.
        candidate_rewards: (B, K) rewards; ties never form a pair.

    A score tie (p_i == p_j) counts as no violation (the hinge's kink; autograd may pick either side).
    """
    check_candidates(candidate_logps, candidate_lengths, candidate_rewards)
    length_penalty = check_finite("length_penalty", length_penalty)
    sft_weight = check_finite("sft_weight", sft_weight, minimum=0.0)
    with torch.no_grad():
        per_length = candidate_lengths.to(candidate_logps.dtype) ** length_penalty  # (B, K)
        scores = candidate_logps / per_length  # (B, K), Eq. 1
        worse = reward_order_mask(candidate_rewards)  # (B, K, K): r_i < r_j
        violated = worse & (scores.unsqueeze(2) > scores.unsqueeze(1))  # (B, K, K): ... and p_i > p_j
        pushed_down = violated.sum(dim=2)  # (B,): pairs in which i is the worse one and scores higher
        pushed_up = violated.sum(dim=1)  # (B,): pairs in which i is the better one and scores lower
        rank_grad = (pushed_down - pushed_up).to(scores.dtype) / per_length  # (B, K)
        best = candidate_rewards.argmax(dim=1, keepdim=True)  # (B, 1)
        sft_grad = torch.zeros_like(scores).scatter(1, best, -sft_weight)  # (B, K)
    return rank_grad, sft_grad
