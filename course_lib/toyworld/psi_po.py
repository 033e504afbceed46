"""IPO's Eq. 11 optimum for the toy world's preference pairs: :func:`ipo_optimal_margins`.

The maths (win rates, Eq. 11) is :mod:`course_lib.maths.ipo_optimum`; this module reads it off pair
records, with mu the empirical distribution of the data set's responses to each prompt.
"""

from __future__ import annotations

import torch

from ..maths.ipo_optimum import optimal_ipo_margins, win_rates

_FIELDS = ("prompt", "chosen_reward", "rejected_reward")


def _responses(records: list[dict], name: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(prompts, chosen rewards, rejected rewards) of pair records, with a clear error for a bad record."""
    if not isinstance(records, (list, tuple)) or not records:
        raise ValueError(f"{name} must be a non-empty list of preference pairs (dicts), got {records!r:.80}")
    prompts, chosen, rejected = [], [], []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise TypeError(f"{name}[{i}] must be a dict with {', '.join(_FIELDS)}, got {type(record).__name__}")
        missing = [field for field in _FIELDS if field not in record]
        if missing:
            raise ValueError(
                f"{name}[{i}] has no {', '.join(repr(m) for m in missing)}: Eq. 11 needs the pairs' true rewards "
                "(load_preferences gives them; pairs without rewards have no win rates)"
            )
        prompts.append(record["prompt"])
        chosen.append(float(record["chosen_reward"]))
        rejected.append(float(record["rejected_reward"]))
    return prompts, torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)


def ipo_optimal_margins(pairs: list[dict], *, beta: float, population: list[dict] | None = None) -> torch.Tensor:
    """The Eq. 11 margin of each pair, h* = (p*(y_w > mu) - p*(y_l > mu)) / tau (Azar et al. 2023), shape (N,).

    p*(y > mu) is y's win rate against every response to the same prompt in ``population`` (default:
    ``pairs`` itself), chosen and rejected alike, with deterministic labels: the higher true reward wins
    and a tie (a response with itself included) counts one half. The sign follows each record's
    chosen/rejected order. This is where IPO's *population* loss puts each margin, between -1/tau and
    1/tau; Eq. 17's per-pair target 1/(2 tau) is reached only in the two-action case.

    Args:
        pairs: dicts with "prompt", "chosen_reward" and "rejected_reward" (as ``load_preferences`` gives).
        beta: tau > 0, as in :func:`course_lib.maths.losses.ipo_loss`.
        population: the pairs whose responses make up mu, e.g. the training pairs when ``pairs`` are
            held out. Every prompt of ``pairs`` must appear in it.

    Returns:
        (N,) float64 optimal margins.
    """
    prompts, chosen_rewards, rejected_rewards = _responses(pairs, "pairs")
    if population is None:
        pop_prompts, pop_chosen, pop_rejected = prompts, chosen_rewards, rejected_rewards
    else:
        pop_prompts, pop_chosen, pop_rejected = _responses(population, "population")
    ids = {prompt: i for i, prompt in enumerate(dict.fromkeys(pop_prompts + prompts))}
    absent = sorted(set(prompts) - set(pop_prompts))
    if absent:
        raise ValueError(f"population has no pair for the prompt {absent[0]!r} of pairs: its win rates are undefined")
    groups = torch.tensor([ids[p] for p in prompts])
    pop_groups = torch.tensor([ids[p] for p in pop_prompts])
    population_rewards = torch.cat([pop_chosen, pop_rejected])
    population_groups = torch.cat([pop_groups, pop_groups])
    chosen = win_rates(chosen_rewards, groups, population_rewards, population_groups)
    rejected = win_rates(rejected_rewards, groups, population_rewards, population_groups)
    return optimal_ipo_margins(chosen, rejected, beta=beta)
