"""IPO's Eq. 11 optimum for the toy world's preference pairs: :func:`ipo_optimal_margins`.

The maths (win rates, Eq. 11) is :mod:`course_lib.maths.ipo_optimum`; this module reads it off pair
records, with mu the empirical distribution of the data set's responses to each prompt.
"""

import torch

from ..maths.checks import check_record
from ..maths.ipo_optimum import eq11_margins_from_win_rates, win_rates

_FIELDS = ("prompt", "chosen_reward", "rejected_reward")
_HINT = ": Eq. 11 needs the pairs' true rewards (load_preferences gives them)"


def _prompts_and_rewards(records: list[dict], name: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(prompts, chosen rewards (N,), rejected rewards (N,)) of pair records."""
    if not isinstance(records, (list, tuple)) or not records:
        raise ValueError(f"{name} must be a non-empty list of preference pairs (dicts), got {records!r:.80}")
    records = [check_record(f"{name}[{i}]", record, _FIELDS, _HINT) for i, record in enumerate(records)]
    chosen, rejected = ([float(r[field]) for r in records] for field in _FIELDS[1:])
    return [r["prompt"] for r in records], torch.tensor(chosen).double(), torch.tensor(rejected).double()


def ipo_optimal_margins(pairs: list[dict], *, beta: float, population: list[dict] | None = None) -> torch.Tensor:
    """The Eq. 11 margin of each pair, h* = (p*(y_w > mu) - p*(y_l > mu)) / tau (Azar et al. 2023), shape (N,).

    p*(y > mu) is y's win rate against every response to the same prompt in ``population`` (default:
    ``pairs`` itself), chosen and rejected alike, with deterministic labels: the higher true reward wins
    and a tie (a response with itself included) counts one half. The sign follows each record's
    chosen/rejected order. This is where IPO's *population* loss (Eq. 13) puts each margin, between -1/tau
    and 1/tau. Eq. 17's per-pair target 1/(2 tau) is where it lands wherever the two win rates differ by 1/2
    (two actions, for one); a policy that minimises the *sampled* loss on a comparison graph with no cycle
    (a forest) puts every one of its pairs at 1/(2 tau).

    Args:
        pairs: dicts with "prompt", "chosen_reward" and "rejected_reward" (as ``load_preferences`` gives).
        beta: tau > 0, as in :func:`course_lib.maths.losses.ipo_loss`.
        population: the pairs whose responses make up mu, e.g. the training pairs when ``pairs`` are
            held out. Every prompt of ``pairs`` must appear in it.

    Returns:
        (N,) float64 optimal margins.
    """
    prompts, chosen_rewards, rejected_rewards = _prompts_and_rewards(pairs, "pairs")
    if population is None:
        pop_prompts, pop_chosen, pop_rejected = prompts, chosen_rewards, rejected_rewards
    else:
        pop_prompts, pop_chosen, pop_rejected = _prompts_and_rewards(population, "population")
    absent = sorted(set(prompts) - set(pop_prompts))
    if absent:
        raise ValueError(f"population has no pair for the prompt {absent[0]!r} of pairs: its win rates are undefined")
    ids = {prompt: i for i, prompt in enumerate(dict.fromkeys(pop_prompts))}
    groups = torch.tensor([ids[p] for p in prompts])  # (N,)
    pop_groups = torch.tensor([ids[p] for p in pop_prompts]).repeat(2)  # (2M,): chosen, then rejected
    pop_rewards = torch.cat([pop_chosen, pop_rejected])  # (2M,)
    chosen = win_rates(chosen_rewards, groups, pop_rewards, pop_groups)
    rejected = win_rates(rejected_rewards, groups, pop_rewards, pop_groups)
    return eq11_margins_from_win_rates(chosen, rejected, beta=beta)
