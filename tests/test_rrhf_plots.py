"""The 18.1 plots draw what they are given: one line per place in the reward order, the SFT term's push as a
line (a constant, so not a panel of its own)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_lib.teaching.rrhf_plots import plot_candidate_gradients  # noqa: E402


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
    ax_grad, ax_share = plot_candidate_gradients(records)
    assert len(ax_grad.get_lines()) == 4 + 2 and len(ax_share.get_lines()) == 8 + 2  # + SFT and zero / the key
    assert list(ax_grad.get_lines()[4].get_ydata()) == [-1.0, -1.0, -1.0]
    assert len(ax_share.get_legend().get_texts()) == 4 + 2  # places, then solid and dashed
    plt.close("all")
    with pytest.raises(ValueError, match="records"):
        plot_candidate_gradients([])
