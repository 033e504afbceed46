"""18.2's intuition plots draw what they say: Psi's two curves, the two-action optima, the histogram's marked lines,
one frontier line per loss with its points."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib.maths.bandit import ipo_bandit_optimum  # noqa: E402
from course_lib.teaching.ipo_plots import (  # noqa: E402
    plot_frontier,
    plot_margin_histogram,
    plot_psi,
    plot_two_action_optimum,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_psi_curves_are_logit_and_shifted_identity():
    ax = plot_psi()
    logit, identity = ax.get_lines()[:2]
    p = torch.tensor(logit.get_xdata())
    torch.testing.assert_close(torch.tensor(logit.get_ydata()), torch.logit(p))
    torch.testing.assert_close(torch.tensor(identity.get_ydata()), p - 0.5)


def test_two_action_optimum_is_one_for_dpo_and_the_closed_form_for_ipo():
    taus = [0.1, 1.0, 10.0]
    dpo, ipo = plot_two_action_optimum(taus).get_lines()[:2]
    assert list(dpo.get_ydata()) == [1.0, 1.0, 1.0]
    expected = [ipo_bandit_optimum([(0, 1)], beta=t)[0].item() for t in taus]
    assert list(ipo.get_ydata()) == pytest.approx(expected)
    assert expected == pytest.approx([torch.sigmoid(torch.tensor(1 / (2 * t))).item() for t in taus], abs=1e-5)


def test_histogram_marks_the_target_and_the_optimum_mean():
    predicted = torch.tensor([0.2, 0.6, 1.3], dtype=torch.float64)
    ax = plot_margin_histogram({"trained": torch.tensor([0.1, 0.9])}, target=1.0, predicted=predicted)
    vertical = sorted(line.get_xdata()[0] for line in ax.get_lines())
    assert vertical == pytest.approx(sorted([1.0, predicted.mean().item()]))


def test_frontier_draws_one_line_per_loss_in_order_of_beta():
    points = [
        {"loss": loss, "beta": beta, "kl": kl, "kl_stderr": 0.1, "reward": reward, "reward_stderr": 0.1}
        for loss, beta, kl, reward in [("dpo", 1.0, 3.0, 2.0), ("dpo", 0.1, 10.0, 1.0), ("ipo", 0.5, 2.0, 1.5)]
    ]
    ax = plot_frontier(points, reference_reward=-0.5)
    by_label = {container.get_label(): container.lines[0] for container in ax.containers}
    assert sorted(label.split()[0] for label in by_label) == ["DPO", "IPO"]
    dpo = next(line for label, line in by_label.items() if label.startswith("DPO"))
    assert list(dpo.get_xdata()) == [10.0, 3.0]  # beta 0.1 then 1.0
    assert list(dpo.get_ydata()) == [1.0, 2.0]
