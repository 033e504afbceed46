"""Watch RRHF train: the summed log-probs of fixed rankings and the gradient each candidate receives.

:func:`make_candidate_gradient_tracker` builds an ``evaluate`` callback for
:func:`course_lib.loop.training.train_rrhf`: every ``every`` steps it scores the K candidates of a fixed
set of rankings under the policy and records, by place in the reward order (place 0 = the highest
reward), the mean gradient that L_rank and the SFT term give each candidate's summed log-prob
(:func:`course_lib.maths.rrhf_gradients.rrhf_candidate_gradients`; negative = pushed up).
"""

from __future__ import annotations

import torch

from ..maths.checks import check_int
from ..maths.rrhf_gradients import rrhf_candidate_gradients
from ..toyworld.batching import encode_prompt_response
from .scoring import response_logps


@torch.no_grad()
def ranking_logps(model: torch.nn.Module, tokenizer, rankings: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and lengths of every candidate of ``rankings``: ``(logps, lengths)``, (N, K) each."""
    if not rankings:
        raise ValueError("rankings is empty")
    k = len(rankings[0]["responses"])
    if any(len(r["responses"]) != k for r in rankings):
        raise ValueError("every ranking must have the same number K of responses")
    batch = encode_prompt_response(
        tokenizer, [r["prompt"] for r in rankings for _ in range(k)], [y for r in rankings for y in r["responses"]]
    )
    logps, lengths = response_logps(model, batch)  # (N*K,), (N*K,)
    return logps.view(-1, k).cpu(), lengths.view(-1, k).cpu()


def places_by_reward(candidate_rewards: torch.Tensor) -> torch.Tensor:
    """Index of the candidate at each place of the reward order, best first (stable for ties). (N, K) -> (N, K)."""
    return torch.sort(candidate_rewards, dim=1, descending=True, stable=True).indices


def make_candidate_gradient_tracker(
    rankings: list[dict],
    tokenizer,
    *,
    every: int = 10,
    length_penalty: float = 1.0,
    sft_weight: float = 1.0,
):
    """An ``evaluate(policy, step, steps)`` callback recording, at step 0, every ``every`` steps and the last:

    ``rank_grad`` and ``sft_grad``: K floats, the mean gradient at each place of the reward order;
    ``pushed_up`` and ``pushed_down``: K floats, the share of candidates at each place whose L_rank
    gradient is negative (pushed up) or positive (pushed down); ``logp``: K floats, the mean summed
    log-prob at each place.
    """
    check_int("every", every, minimum=1)
    rewards = torch.tensor([r["rewards"] for r in rankings], dtype=torch.float32)  # (N, K)
    places = places_by_reward(rewards)  # (N, K)

    def by_place(values: torch.Tensor) -> list[float]:
        return values.gather(1, places).double().mean(dim=0).tolist()

    def evaluate(policy, step: int, steps: int):
        if step % every and step != steps:
            return None
        logps, lengths = ranking_logps(policy, tokenizer, rankings)
        rank_grad, sft_grad = rrhf_candidate_gradients(
            logps, lengths, rewards, length_penalty=length_penalty, sft_weight=sft_weight
        )
        return {
            "rank_grad": by_place(rank_grad),
            "sft_grad": by_place(sft_grad),
            "pushed_up": by_place((rank_grad < 0).float()),
            "pushed_down": by_place((rank_grad > 0).float()),
            "logp": by_place(logps),
        }

    return evaluate
