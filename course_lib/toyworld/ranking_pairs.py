"""Preference pairs cut from ranked candidate sets, for the pairwise losses (DPO, IPO) to use a ranking.

A ranking holds K responses to one prompt with their rewards. ``which="all"`` gives every pair of
candidates whose rewards differ, the better one as "chosen": the K(K-1)/2 pairs of RRHF's Eq. 2 when no
two rewards tie (tied pairs are skipped, as Eq. 2 skips them). ``which="best_worst"`` gives one pair per
ranking, the first highest-reward response against the first lowest (none when every reward ties).
"""

from ..maths.checks import check_choice, check_record

WHICH = ("all", "best_worst")


def ranking_pairs(rankings: list[dict], *, which: str = "all") -> list[dict]:
    """Pairs ``{"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}`` from ``rankings``.

    Args:
        rankings: dicts with "prompt", "responses" (K strings) and "rewards" (K numbers).
        which: "all" (every reward-ordered pair, ties skipped, in the order i < j of the candidates) or
            "best_worst" (one pair per ranking).
    """
    check_choice("which", which, WHICH)
    if isinstance(rankings, (str, bytes, dict)) or not hasattr(rankings, "__len__"):
        raise TypeError(f"rankings must be a list of dicts, got {type(rankings).__name__}")
    pairs = []
    for n, ranking in enumerate(rankings):
        check_record(f"rankings[{n}]", ranking, ("prompt", "responses", "rewards"))
        responses, rewards = list(ranking["responses"]), [float(r) for r in ranking["rewards"]]
        if len(responses) != len(rewards):
            raise ValueError(f"rankings[{n}] has {len(responses)} responses but {len(rewards)} rewards")
        if which == "best_worst":
            best = max(range(len(rewards)), key=lambda i: rewards[i])
            worst = min(range(len(rewards)), key=lambda i: rewards[i])
            candidates = [(best, worst)] if rewards[best] > rewards[worst] else []
        else:
            candidates = [
                (i, j) if rewards[i] > rewards[j] else (j, i)
                for i in range(len(rewards))
                for j in range(i + 1, len(rewards))
                if rewards[i] != rewards[j]
            ]
        pairs += [
            {"prompt": ranking["prompt"], "chosen": responses[better], "rejected": responses[worse]}
            | {"chosen_reward": rewards[better], "rejected_reward": rewards[worse]}
            for better, worse in candidates
        ]
    return pairs
