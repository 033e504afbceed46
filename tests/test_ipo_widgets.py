"""Notebook 18.2's widgets, headless: the pure callbacks, and the widgets driven by setting sliders."""

import math

import pytest
import torch

from course_lib.maths.bandit import ipo_bandit_optimum
from course_lib.maths.losses import PAIRWISE_LOSSES, LossSpec
from course_lib.teaching.widgets.bandit_tau import (
    bandit_readout_text,
    bandit_tau_state,
    build_bandit_widget,
    plot_bandit_grid,
)
from course_lib.teaching.widgets.margin_loss import (
    MarginLossFigure,
    build_margin_widget,
    margin_losses_state,
    margin_readout_text,
    push_stops_at,
)
from course_lib.toyworld.bandit import D1, load_d1_sweep


def plot_margin_losses(state):
    figure = MarginLossFigure(state)
    figure.update(state)
    return figure.static()


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def state_at(h_sum, h_avg, beta_sum, beta_avg, **kwargs):
    return margin_losses_state(
        {"summed": h_sum, "averaged": h_avg}, {"summed": beta_sum, "averaged": beta_avg}, **kwargs
    )


@pytest.mark.parametrize("h, h_avg, beta, tau", [(-2.0, 0.3, 0.1, 0.5), (0.0, 1.0, 0.5, 0.5), (11.0, 3.0, 1.5, 0.1)])
def test_each_loss_matches_its_closed_form_in_its_own_units(h, h_avg, beta, tau):
    m, eps = 0.8, 0.2
    c = state_at(h, h_avg, beta, tau, offset=m, label_smoothing=eps).curves
    z = beta * h
    assert (c["dpo"].units, c["ipo"].units, c["hinge"].units) == ("summed", "averaged", "summed")
    assert (c["dpo"].value, c["dpo"].grad) == pytest.approx((-math.log(sigmoid(z)), -beta * sigmoid(-z)), rel=1e-9)
    assert c["ipo"].h == h_avg and c["ipo"].beta == tau
    assert (c["ipo"].value, c["ipo"].grad) == pytest.approx(((h_avg - 1 / (2 * tau)) ** 2, 2 * (h_avg - 1 / (2 * tau))))
    assert (c["hinge"].value, c["hinge"].grad) == pytest.approx((max(0.0, 1 - z), -beta if z < 1 else 0.0))
    assert c["dpo, offset m"].value == pytest.approx(-math.log(sigmoid(z - m)), rel=1e-9)
    cdpo = -(1 - eps) * math.log(sigmoid(z)) - eps * math.log(sigmoid(-z))
    assert c["dpo, flip rate eps"].value == pytest.approx(cdpo, rel=1e-9)


def test_every_registry_loss_is_drawn_and_the_curves_agree_with_the_points():
    state = state_at(2.0, 2.0, 0.5, 0.5)
    assert {c.label.split(",")[0] for c in state.curves.values()} == set(PAIRWISE_LOSSES)
    for c in state.curves.values():
        k = min(range(len(c.h_grid)), key=lambda i: abs(c.h_grid[i] - 2.0))
        assert c.h_grid[k] == pytest.approx(2.0)  # the grid holds h = 2 for both units
        assert (c.values[k], c.grads[k]) == pytest.approx((c.value, c.grad), abs=1e-9)


def test_a_new_registry_entry_is_drawn_from_its_spec_alone():
    seen = []

    def my_reference_free_loss(chosen, rejected, ref_chosen, ref_rejected, *, beta):
        seen.append((ref_chosen, ref_rejected))
        return -torch.nn.functional.logsigmoid(beta * (chosen - rejected) - 0.5)

    spec = LossSpec("mine", my_reference_free_loss, average_logps=True, needs_reference=False)
    state = state_at(0.0, 2.0, 1.0, 2.0, losses=[spec])
    assert list(state.curves) == ["mine"] and state.curves["mine"].units == "averaged"
    assert state.curves["mine"].value == pytest.approx(-math.log(sigmoid(2.0 * 2.0 - 0.5)))
    assert all(ref == (None, None) for ref in seen)  # a reference-free loss gets no reference log-probs
    assert len(plot_margin_losses(state).axes) == 2  # one row: only the averaged unit is drawn


@pytest.mark.parametrize("beta", [0.05, 0.5, 2.0])
def test_where_each_loss_stops_pushing(beta):
    assert push_stops_at("ipo", beta=beta) == pytest.approx(1 / (2 * beta), abs=1e-8)
    assert push_stops_at("hinge", beta=beta) == pytest.approx(1 / beta, abs=1e-8)
    assert push_stops_at("dpo", beta=beta, label_smoothing=0.1) == pytest.approx(math.log(9) / beta, abs=1e-8)
    assert push_stops_at("dpo", beta=beta, h_range=(-20.0, 300.0)) is None
    assert push_stops_at("dpo", beta=beta, offset=2.0, h_range=(-20.0, 300.0)) is None


def test_readouts_say_the_units_are_not_comparable():
    state = state_at(10.0, 2.0, 0.1, 0.25)
    text = margin_readout_text(state)
    assert all(label in text for label in state.curves)
    assert "n times h averaged" in text and "different units" in text
    assert state.curves["ipo"].push == "no push" and state.curves["dpo"].push == "pushes h up"
    assert state_at(10.0, 3.0, 0.1, 0.25).curves["ipo"].push == "pushes h down"


def test_margin_state_rejects_bad_input():
    with pytest.raises(ValueError, match="beta"):
        state_at(1.0, 1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        state_at(1.0, 1.0, 0.5, 0.5, label_smoothing=0.5)
    with pytest.raises(ValueError, match="h"):
        state_at(float("nan"), 1.0, 0.5, 0.5)


def test_margin_widget_redraws_on_every_slider():
    w = build_margin_widget(h={"averaged": 1.5}, beta={"averaged": 0.5}, offset=1.0)
    assert w.state.curves["ipo"].h == pytest.approx(1.5) and w.state.offset == 1.0
    image, text = w.image.value, w.readout.value
    w.h_sliders["averaged"].value = 4.0
    assert w.state.curves["ipo"].grad == pytest.approx(6.0) and w.state.curves["dpo"].h == pytest.approx(10.0)
    assert w.image.value != image and w.readout.value != text
    w.beta_sliders["averaged"].value = 0.1
    assert w.state.curves["ipo"].stops_at == pytest.approx(5.0, rel=1e-6) and w.state.curves["ipo"].grad < 0
    w.beta_sliders["summed"].value = 0.5
    assert w.state.curves["hinge"].stops_at == pytest.approx(2.0, rel=1e-6)
    w.offset_slider.value, w.eps_slider.value = 2.0, 0.3
    assert (w.state.offset, w.state.label_smoothing) == pytest.approx((2.0, 0.3))
    print(f"margin widget redraw: {w.redraw_ms:.1f} ms")


def _still_animated(fig) -> list:
    """Artists a static figure would leave out of ``savefig`` (animated ones are drawn only by blitting)."""
    return [artist for ax in fig.axes for artist in ax.get_children() if artist.get_animated()]


def test_static_margin_figure_draws_the_state():
    state = state_at(5.0, 1.5, 0.1, 0.5)
    fig = plot_margin_losses(state)
    drawn = {line.get_label(): line for ax in fig.axes for line in ax.get_lines() if line.get_label() in state.curves}
    assert set(drawn) == set(state.curves)
    for label, line in drawn.items():
        assert list(line.get_ydata()) == pytest.approx(list(state.curves[label].values))
    assert [ax.get_xlabel().split(",")[1] for ax in fig.axes[::2]] == [
        " summed log-probs (nats)",
        " averaged log-probs (nats)",
    ]
    assert not _still_animated(fig)


# ----------------------------------------------------------------------------- bandit explorer
@pytest.fixture(scope="module")
def sweep():
    return load_d1_sweep()


def test_bandit_state_starts_at_the_reference(sweep):
    before = sweep["probs"].clone()
    s = bandit_tau_state(sweep, 0.5)
    assert torch.equal(sweep["probs"], before)  # pure
    assert s.steps[0] == 0 and s.steps[1] == sweep["record_every"] and s.steps[-1] == sweep["steps"]
    assert torch.allclose(s.mean["dpo"][0], torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(s.ipo_optimum, ipo_bandit_optimum(D1, beta=0.5))
    assert (s.final["ipo"] - s.ipo_optimum.double()).abs().max() < 0.01 and float(s.final["dpo"][0]) > 0.999
    assert s.final_kl["dpo"] > s.final_kl["ipo"] > 0
    assert bool((s.low["ipo"] <= s.mean["ipo"] + 1e-12).all()) and bool((s.mean["ipo"] <= s.high["ipo"] + 1e-12).all())
    assert "tau = 0.5" in bandit_readout_text(s)
    with pytest.raises(ValueError, match="taus"):
        bandit_tau_state(sweep, 0.3)


def test_bandit_widget_follows_the_slider_and_its_figure_draws_the_state(sweep):
    w = build_bandit_widget(sweep, beta=0.1)
    image = w.image.value
    w.beta_slider.value = 2.0
    assert w.state.beta == 2.0 and w.image.value != image and "tau = 2" in w.readout.value
    assert float(w.state.final["ipo"][0]) < 0.5  # tau = 2: IPO stays near the uniform reference
    fig = plot_bandit_grid(sweep, [2.0])
    for ax, loss in zip(fig.axes, w.state.mean):
        curves = {line.get_label(): line for line in ax.get_lines()}
        assert list(curves["a"].get_ydata()) == pytest.approx(w.state.mean[loss][:, 0].tolist())
        assert ax.get_title() == f"{loss.upper()}, tau = 2"
