"""The teaching layer's plots draw what they say: curves from step 0, and a frontier as each method's points and
Pareto front on a log axis with plain labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_lib.teaching.plots import pareto_front, plot_comparison, plot_over_steps, plot_reward_kl_frontier  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_pareto_front_keeps_only_runs_nothing_beats_on_both():
    runs = [{"kl": kl, "reward": r} for kl, r in [(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (0.5, 0.1), (4.0, 0.9)]]
    assert [(p["kl"], p["reward"]) for p in pareto_front(runs)] == [(0.5, 0.1), (1.0, 0.5), (3.0, 0.9)]


def test_frontier_draws_points_and_a_front_that_never_doubles_back():
    points = [
        {"method": method, "label": f"{beta:g}", "kl": kl, "kl_stderr": 0.1, "reward": reward, "reward_stderr": 0.1}
        for method, beta, kl, reward in [("dpo", 1.0, 3.0, 2.0), ("dpo", 0.1, 10.0, 1.0), ("dpo", 0.3, 6.0, 2.5),
                                         ("ipo", 0.5, 2.0, 1.5)]
    ]  # fmt: skip
    ax = plot_reward_kl_frontier(points, log_kl=True, reference_reward=-0.5)
    markers = {c.get_label(): c.lines[0] for c in ax.containers}
    assert sorted(markers) == ["dpo", "ipo"]
    dpo = markers["dpo"]
    assert dpo.get_linestyle() == "None" and sorted(dpo.get_xdata()) == [3.0, 6.0, 10.0]
    fronts = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) > 1]
    assert [list(line.get_xdata()) for line in fronts] == [[3.0, 6.0]]  # beta 0.1 is beaten: not on the front
    assert ax.get_xscale() == "log" and ax.xaxis.get_major_formatter()(2.0, 0) == "2"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "reference" in legend and any("beats" in text for text in legend)


def test_training_curves_start_at_step_0():
    history = [{"step": s, "margin": 0.1 * s} for s in (1, 2, 3)]  # step s: measured before update s
    ax = plot_over_steps([{"loss": "ipo", "beta": 0.5, "history": history}], "margin")
    assert list(ax.get_lines()[0].get_xdata()) == [0, 1, 2]


def test_comparison_draws_each_unit_of_margin_in_its_own_panel(tmp_path):
    def run(loss, beta):
        return {"loss": loss, "beta": beta, "history": [{"step": 1, "margin": 0.5}], "evals": [{"step": 0, "kl": 0.0}]}

    results = {"runs": [run("dpo", 0.1), run("ipo", 0.5), {**run("rrhf", None), "history": [{"step": 1}]}]}
    assert plot_comparison(results, tmp_path) == ["margin_and_kl.png", "reward_vs_kl.png"]
    assert (tmp_path / "margin_and_kl.png").stat().st_size > 0 and (tmp_path / "reward_vs_kl.png").stat().st_size > 0
