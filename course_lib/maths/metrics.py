"""Implicit rewards and the preference metrics TRL's DPOTrainer logs."""

import torch

from .checks import check_logps, check_positive


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, *, beta: float) -> torch.Tensor:
    """DPO's implicit reward ``r(y) = beta * (log pi(y) - log pi_ref(y))`` (Rafailov et al. 2023, Eq. 5).

    Args:
        policy_logps, ref_logps: (B,). Returns: (B,).
    """
    beta = check_positive("beta", beta)
    check_logps(policy_logps=policy_logps, ref_logps=ref_logps)
    return beta * (policy_logps - ref_logps)


@torch.no_grad()
def preference_metrics(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> dict[str, float]:
    """Batch means with TRL's keys.

    ``rewards/chosen`` and ``rewards/rejected`` are the implicit rewards, ``rewards/margins`` their
    difference, ``rewards/accuracies`` the fraction of pairs with chosen reward *strictly* greater (so
    it reads 0 at step 0, when policy == reference), ``logps/chosen`` and ``logps/rejected`` the policy's
    log-probs. TRL computes these from summed log-probs whatever the loss: pass summed log-probs to
    match it.

    Args:
        the four (B,) log-prob tensors. Returns: dict of Python floats.
    """
    beta = check_positive("beta", beta)
    check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if policy_chosen_logps.numel() == 0:
        raise ValueError("preference_metrics needs at least one pair: the log-prob tensors are empty (B = 0)")
    chosen_rewards = (beta * (policy_chosen_logps - ref_chosen_logps)).float()  # (B,), Eq. 5
    rejected_rewards = (beta * (policy_rejected_logps - ref_rejected_logps)).float()
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "logps/chosen": policy_chosen_logps.detach().float().mean().item(),
        "logps/rejected": policy_rejected_logps.detach().float().mean().item(),
    }
