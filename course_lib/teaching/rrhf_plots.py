"""Plots of notebook 18.1 (RRHF): the gradient each candidate gets over training.

Plotting only: every number comes from a tracker's records. The reward-KL frontier is
:func:`course_lib.teaching.plots.plot_reward_kl_frontier`, shared with 18.2.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

PLACE_COLOURS = ("tab:green", "tab:olive", "tab:orange", "tab:red", "tab:purple", "tab:brown")


def plot_candidate_gradients(records: list[dict], *, axes=None, place_names: list[str] | None = None):
    """Mean gradient of L_rank and of the SFT term on each candidate's summed log-prob, over training.

    One line per place in the reward order (place 0 = the highest reward). Negative: gradient descent
    pushes the candidate's log-prob up; positive: down.

    Args:
        records: the tracker's records (``history.evals`` of a run with
            :func:`course_lib.loop.rrhf_tracking.make_candidate_gradient_tracker`): ``step``,
            ``rank_grad``, ``sft_grad``, ``pushed_up``, ``pushed_down``.
    Returns:
        the three axes: L_rank's mean gradient, the SFT term's, and the share pushed up / down by L_rank.
    """
    if not records:
        raise ValueError("records is empty: train with the tracker as the evaluate callback")
    k = len(records[0]["rank_grad"])
    names = place_names or ["best"] + [f"place {i + 1}" for i in range(1, k - 1)] + ["worst"]
    axes = axes if axes is not None else plt.subplots(1, 3, figsize=(12, 3.2))[1]
    steps = [r["step"] for r in records]
    for place in range(k):
        colour = PLACE_COLOURS[place % len(PLACE_COLOURS)]
        axes[0].plot(steps, [r["rank_grad"][place] for r in records], marker=".", color=colour, label=names[place])
        axes[1].plot(steps, [r["sft_grad"][place] for r in records], marker=".", color=colour, label=names[place])
        axes[2].plot(steps, [r["pushed_up"][place] for r in records], color=colour, label=f"{names[place]}: up")
        axes[2].plot(steps, [r["pushed_down"][place] for r in records], color=colour, ls="--", label="down")
    axes[0].set(xlabel="step", ylabel="mean dL_rank / dlogp", title="L_rank: < 0 pushes up, > 0 down")
    axes[1].set(xlabel="step", ylabel="mean d(w L_ft) / dlogp", title="SFT term: only the best, always up")
    axes[2].set(xlabel="step", ylabel="share of candidates", title="pushed up (solid) / down (dashed) by L_rank")
    for ax in axes:
        ax.axhline(0, color="0.7", lw=0.8)
    axes[0].legend(fontsize=7)
    handles, labels = axes[2].get_legend_handles_labels()
    axes[2].legend(handles[::2], [label.removesuffix(": up") for label in labels[::2]], fontsize=7)
    return axes
