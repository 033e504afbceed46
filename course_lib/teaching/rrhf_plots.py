"""Plots of notebook 18.1 (RRHF): the gradient each candidate gets over training.

Plotting only: every number comes from a tracker's records. The reward-KL frontier is
:func:`course_lib.teaching.plots.plot_reward_kl_frontier`, shared with 18.2.
"""

from __future__ import annotations

import matplotlib.pyplot as plt


def plot_candidate_gradients(records: list[dict], *, axes=None, place_names: list[str] | None = None):
    """L_rank's mean gradient on each candidate's summed log-prob, and the share it pushes up or down, over training.

    One colour per place in the reward order (place 0 = the highest reward); negative gradient: gradient
    descent pushes the log-prob up. The SFT term's gradient (``-sft_weight`` on the best, 0 on the others) is
    the first panel's dotted line, not a panel of its own.

    Args:
        records: the tracker's records (``history.evals`` of a run with
            :func:`course_lib.loop.rrhf_tracking.make_candidate_gradient_tracker`): ``step``, ``rank_grad``,
            ``sft_grad``, ``pushed_up``, ``pushed_down``.
    Returns:
        the two axes.
    """
    if not records:
        raise ValueError("records is empty: train with the tracker as the evaluate callback")
    k = len(records[0]["rank_grad"])
    names = place_names or ["best"] + [f"place {i + 1}" for i in range(1, k - 1)] + ["worst"]
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(10, 3.2))[1]
    steps = [r["step"] for r in records]
    for place in range(k):
        colour = f"C{place}"
        axes[0].plot(steps, [r["rank_grad"][place] for r in records], marker=".", color=colour, label=names[place])
        axes[1].plot(steps, [r["pushed_up"][place] for r in records], color=colour, label=names[place])
        axes[1].plot(steps, [r["pushed_down"][place] for r in records], color=colour, ls="--")
    axes[0].plot(steps, [r["sft_grad"][0] for r in records], color="C0", ls=":", label="SFT term's, on the best")
    axes[0].axhline(0, color="0.7", lw=0.8)
    axes[0].set(xlabel="updates done", ylabel="mean dL_rank / dlogp", title="L_rank: < 0 pushes up, > 0 down")
    axes[1].set(xlabel="updates done", ylabel="share of candidates", title="pushed up or down by L_rank")
    axes[1].plot([], [], color="0.4", label="solid: pushed up")
    axes[1].plot([], [], color="0.4", ls="--", label="dashed: pushed down")
    for ax in axes:
        ax.legend(fontsize=7)
    return axes
