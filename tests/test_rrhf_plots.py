"""The 18.1 plots draw what they are given: one point per run, one line per place in the reward order."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_lib.teaching.plots import plot_reward_kl_frontier  # noqa: E402
from course_lib.teaching.rrhf_plots import plot_candidate_gradients  # noqa: E402


def test_frontier_one_marker_per_run():
    points = [
        {"method": "RRHF", "label": "w=1", "kl": 1.0, "kl_stderr": 0.1, "reward": 1.0, "reward_stderr": 0.1},
        {"method": "RRHF", "label": "w=3", "kl": 0.8, "kl_stderr": 0.1, "reward": 0.9, "reward_stderr": 0.1},
        {"method": "DPO", "label": "b=1", "kl": 2.0, "kl_stderr": 0.1, "reward": 1.5, "reward_stderr": 0.1},
    ]
    ax = plot_reward_kl_frontier(points, title="t")
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1 or line.get_marker() == "o"]
    xs = sorted(x for line in lines if line.get_marker() == "o" for x in line.get_xdata())
    assert xs == [0.8, 1.0, 2.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["RRHF", "DPO"]
    log_ax = plot_reward_kl_frontier(points, log_kl=True)
    assert log_ax.get_xscale() == "log" and log_ax.xaxis.get_major_formatter()(2.0, 0) == "2"
    plt.close("all")


def test_candidate_gradients_one_line_per_place():
    records = [
        {
            "step": s,
            "rank_grad": [-0.5, 0.0, 0.1, 0.4],
            "sft_grad": [-1.0, 0, 0, 0],
            "pushed_up": [0.5, 0.3, 0.2, 0.0],
            "pushed_down": [0.0, 0.2, 0.3, 0.6],
        }
        for s in (0, 10, 20)
    ]
    axes = plot_candidate_gradients(records)
    assert len(axes[0].get_lines()) == 4 + 1 and len(axes[2].get_lines()) == 8 + 1  # + the zero line
    assert list(axes[1].get_lines()[0].get_ydata()) == [-1.0, -1.0, -1.0]
    plt.close("all")
    with pytest.raises(ValueError, match="records"):
        plot_candidate_gradients([])
