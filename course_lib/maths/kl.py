"""KL divergence from the reference: sample estimators and the exact per-token sum.

Sequence-level ``KL(pi || pi_ref) = E_{y ~ pi}[log pi(y) - log pi_ref(y)]`` needs samples *from the
policy*, not the preference data.
"""

import torch

from .checks import check_logits_and_labels, check_logps
from .logprobs import IGNORE_INDEX


def kl_estimators(policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Schulman's k1, k2, k3 estimators of KL(pi || pi_ref), one value per sample y ~ pi.

    With ``log_ratio = log pi_ref(y) - log pi(y)``:
    k1 = -log_ratio (unbiased, can be negative), k2 = log_ratio**2 / 2 (biased, low variance),
    k3 = (exp(log_ratio) - 1) - log_ratio (unbiased, always >= 0).
    (J. Schulman, "Approximating KL divergence", 2020.)

    Args:
        policy_logps, ref_logps: (N,) log-probs of samples drawn from the policy.
    Returns:
        dict with "k1", "k2", "k3", each (N,).
    """
    check_logps(policy_logps=policy_logps, ref_logps=ref_logps)
    log_ratio = ref_logps - policy_logps
    return {"k1": -log_ratio, "k2": 0.5 * log_ratio**2, "k3": torch.expm1(log_ratio) - log_ratio}


def sequence_kl(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Exact per-token KL summed along each sequence: ``sum_t KL(pi(.|x, y_<t) || pi_ref(.|x, y_<t))``.

    For y sampled from the policy this is an unbiased, low-variance estimate of the sequence KL: at
    every scored position it sums over the whole vocabulary instead of using the one sampled token.

    Args:
        policy_logits, ref_logits: (B, T, V) for the same input ids.
        labels: (B, T) aligned with the inputs; ``ignore_index`` where a position is not scored. As in
            :func:`sequence_logps`, the logits at t are scored when ``labels[:, t+1]`` is scored.
    Returns:
        (B,) KL per sequence, in fp32.
    """
    check_logits_and_labels(labels, policy_logits=policy_logits, ref_logits=ref_logits)
    scored = labels[:, 1:] != ignore_index  # (B, T-1)
    # at most 8 chunks of rows, so no full (B, T, V) fp32 copy is held at once
    chunk_size = -(-policy_logits.shape[0] // 8)
    kls = []
    for chunk_policy, chunk_ref, chunk_scored in zip(
        policy_logits[:, :-1].split(chunk_size), ref_logits[:, :-1].split(chunk_size), scored.split(chunk_size)
    ):
        unscored = ~chunk_scored.unsqueeze(-1)  # (b, T-1, 1)
        # mask before the normaliser: an inf or NaN logit at an unscored position sends no NaN gradient back
        policy_logp = chunk_policy.float().masked_fill(unscored, 0.0).log_softmax(-1)  # (b, T-1, V)
        ref_logp = chunk_ref.float().masked_fill(unscored, 0.0).log_softmax(-1)
        policy_p = policy_logp.exp()
        # 0 * log(0 / p_ref) = 0, also where both models put -inf on a token (-inf - -inf would be NaN)
        log_ratio = torch.where(policy_p > 0, policy_logp - ref_logp, 0.0)
        kls.append((policy_p * log_ratio).sum(-1))  # (b, T-1)
    per_token = torch.cat(kls)  # (B, T-1)
    return torch.where(scored, per_token, torch.zeros_like(per_token)).sum(-1)
