"""Notebook 18.2's widgets, headless: the pure callbacks, and the widgets driven by setting sliders."""

import math

import pytest
import torch

from course_lib.maths.bandit import ipo_bandit_optimum
from course_lib.teaching.widgets.bandit_tau import (
    bandit_readout_text,
    bandit_tau_state,
    build_bandit_widget,
    plot_bandit_tau,
)
from course_lib.teaching.widgets.margin_loss import (
    LOSS_NAMES,
    build_margin_widget,
    margin_losses_state,
    margin_readout_html,
    margin_readout_text,
    plot_margin_losses,
)
from course_lib.toyworld.bandit import D1, load_d1_sweep


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


# ----------------------------------------------------------------------------- margin explorer: maths
@pytest.mark.parametrize("h,beta", [(-2.0, 0.1), (0.0, 0.5), (0.7, 0.5), (3.0, 1.5), (11.0, 0.05)])
def test_margin_state_matches_closed_forms(h, beta):
    m, eps = 0.8, 0.2
    s = margin_losses_state(h, beta=beta, margin=m, label_smoothing=eps)
    z = beta * h
    assert s.values["DPO"] == pytest.approx(-math.log(sigmoid(z)), rel=1e-9)
    assert s.grads["DPO"] == pytest.approx(-beta * sigmoid(-z), rel=1e-9)
    assert s.values["IPO"] == pytest.approx((h - 1 / (2 * beta)) ** 2, rel=1e-9, abs=1e-12)
    assert s.grads["IPO"] == pytest.approx(2 * (h - 1 / (2 * beta)), rel=1e-9, abs=1e-12)
    assert s.values["hinge"] == pytest.approx(max(0.0, 1 - z), abs=1e-12)
    assert s.grads["hinge"] == pytest.approx(-beta if z < 1 else 0.0, abs=1e-12)
    assert s.values["margin DPO"] == pytest.approx(-math.log(sigmoid(z - m)), rel=1e-9)
    assert s.grads["margin DPO"] == pytest.approx(-beta * sigmoid(m - z), rel=1e-9)
    assert s.values["cDPO"] == pytest.approx(-(1 - eps) * math.log(sigmoid(z)) - eps * math.log(sigmoid(-z)), rel=1e-9)
    assert s.grads["cDPO"] == pytest.approx(-beta * (1 - eps) * sigmoid(-z) + beta * eps * sigmoid(z), rel=1e-9)
    assert s.ipo_target == pytest.approx(1 / (2 * beta))
    assert s.hinge_corner == pytest.approx(1 / beta)
    assert s.margin_midpoint == pytest.approx(m / beta)


def test_margin_state_curves_agree_with_point_values():
    s = margin_losses_state(1.0, beta=0.5, n_grid=161)  # grid -4 .. 12 in steps of 0.1: 1.0 is on it
    assert len(s.h_grid) == 161
    k = min(range(161), key=lambda i: abs(s.h_grid[i] - 1.0))
    for name in LOSS_NAMES:
        assert s.curve_values[name][k] == pytest.approx(s.values[name], abs=1e-9)
        assert s.curve_grads[name][k] == pytest.approx(s.grads[name], abs=1e-9)


@pytest.mark.parametrize("beta", [0.05, 0.2, 1.0, 2.0])
def test_gradient_signs(beta):
    s = margin_losses_state(0.0, beta=beta, h_range=(-20.0, 40.0), n_grid=601)
    grid = torch.tensor(s.h_grid)
    dpo, ipo, hinge = (torch.tensor(s.curve_grads[n]) for n in ("DPO", "IPO", "hinge"))
    assert bool((dpo < 0).all())  # DPO always pushes h up, whatever beta
    assert bool((ipo[grid < 1 / (2 * beta) - 1e-9] < 0).all()) and bool((ipo[grid > 1 / (2 * beta) + 1e-9] > 0).all())
    assert bool((hinge[grid > 1 / beta + 1e-9] == 0).all())
    assert bool((torch.tensor(s.curve_grads["margin DPO"]) < 0).all())


def test_cdpo_has_a_finite_target():
    beta, eps = 0.5, 0.1
    target = math.log((1 - eps) / eps) / beta  # sigmoid(beta h) = 1 - eps
    assert margin_losses_state(target, beta=beta, label_smoothing=eps).grads["cDPO"] == pytest.approx(0.0, abs=1e-12)
    assert margin_losses_state(target + 0.5, beta=beta, label_smoothing=eps).grads["cDPO"] > 0


def test_readouts_name_every_loss_and_the_sign_change():
    s = margin_losses_state(2.0, beta=0.25)
    text, page = margin_readout_text(s), margin_readout_html(s)
    for name in LOSS_NAMES:
        assert name in text and name in page
    assert "1/(2 tau) = 2" in text
    assert s.grad_sign("IPO") == "no push" and s.grad_sign("DPO") == "pushes h up"
    assert margin_losses_state(3.0, beta=0.25).grad_sign("IPO") == "pushes h down"


def test_margin_state_rejects_bad_input():
    with pytest.raises(ValueError, match="beta"):
        margin_losses_state(1.0, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        margin_losses_state(1.0, beta=0.5, label_smoothing=0.5)
    with pytest.raises(ValueError, match="h"):
        margin_losses_state(float("nan"), beta=0.5)


# ----------------------------------------------------------------------------- margin explorer: widget
def test_margin_widget_redraws_on_every_slider():
    w = build_margin_widget(beta=0.5, h=1.5)
    assert w.state.beta == pytest.approx(0.5) and w.state.h == pytest.approx(1.5)
    before_image, before_text = w.image.value, w.readout.value
    w.h_slider.value = 4.0
    assert w.state.h == pytest.approx(4.0) and w.state.grads["IPO"] == pytest.approx(6.0)
    assert w.image.value != before_image and w.readout.value != before_text
    w.beta_slider.value = 0.1
    assert w.state.ipo_target == pytest.approx(5.0, rel=1e-6) and w.state.grads["IPO"] < 0
    assert "5" in w.readout.value
    w.margin_slider.value = 2.0
    assert w.state.margin == pytest.approx(2.0)
    w.eps_slider.value = 0.3
    assert w.state.label_smoothing == pytest.approx(0.3)
    times = []
    for h in (-3.0, 0.0, 2.5, 7.0, 11.0):
        w.h_slider.value = h
        times.append(w.redraw_ms)
    print(f"margin widget redraw: median {sorted(times)[2]:.1f} ms, max {max(times):.1f} ms")


def test_seed_configuration_on_the_widget():
    # the seed's "ipo_loss" is -log sigmoid(h - beta_seed): margin DPO with beta = 1 and m = beta_seed
    w = build_margin_widget(beta=1.0, h=0.0, margin=0.1)
    assert w.state.values["margin DPO"] == pytest.approx(-math.log(sigmoid(-0.1)), rel=1e-9)
    assert all(g < 0 for g in w.state.curve_grads["margin DPO"])


def _still_animated(fig) -> list:
    """Artists a static figure would leave out of ``savefig`` (animated ones are drawn only by blitting)."""
    return [artist for ax in fig.axes for artist in ax.get_children() if artist.get_animated()]


def test_static_margin_figure_draws_the_state():
    state = margin_losses_state(1.0, beta=0.5)
    fig = plot_margin_losses(state)
    ax_loss, ax_grad = fig.axes
    curves = {line.get_label(): line for line in ax_loss.get_lines() if line.get_label() in LOSS_NAMES}
    assert set(curves) == set(LOSS_NAMES)
    for name, line in curves.items():
        assert list(line.get_xdata()) == pytest.approx(list(state.h_grid))
        assert list(line.get_ydata()) == pytest.approx(list(state.curve_values[name]))
    dots = [line for line in ax_loss.get_lines() if list(line.get_xdata()) == [state.h]]
    assert sorted(float(d.get_ydata()[0]) for d in dots) == pytest.approx(sorted(state.values.values()))
    grad_dots = [line for line in ax_grad.get_lines() if list(line.get_xdata()) == [state.h]]
    assert sorted(float(d.get_ydata()[0]) for d in grad_dots) == pytest.approx(sorted(state.grads.values()))
    assert not _still_animated(fig)


# ----------------------------------------------------------------------------- bandit explorer
@pytest.fixture(scope="module")
def sweep():
    return load_d1_sweep()


def test_bandit_state(sweep):
    before = sweep["probs"].clone()
    s = bandit_tau_state(sweep, 0.5)
    assert torch.equal(sweep["probs"], before)  # pure
    assert s.steps[0] == sweep["record_every"] and s.steps[-1] == sweep["steps"]
    torch.testing.assert_close(s.ipo_optimum, ipo_bandit_optimum(D1, beta=0.5))
    assert (s.final["ipo"] - s.ipo_optimum.double()).abs().max() < 0.01
    assert float(s.final["dpo"][0]) > 0.999
    assert s.final_kl["dpo"] > s.final_kl["ipo"] > 0
    for loss in ("dpo", "ipo"):
        assert bool((s.low[loss] <= s.mean[loss] + 1e-12).all()) and bool((s.mean[loss] <= s.high[loss] + 1e-12).all())
    text = bandit_readout_text(s)
    assert "tau = 0.5" in text and "IPO optimum" in text
    with pytest.raises(ValueError, match="taus"):
        bandit_tau_state(sweep, 0.3)


def test_bandit_widget_follows_the_slider(sweep):
    w = build_bandit_widget(sweep, beta=0.1)
    assert w.state.beta == pytest.approx(0.1)
    image, text = w.image.value, w.readout.value
    times = []
    for tau in (0.5, 5.0, 1.0, 0.05, 2.0):
        w.beta_slider.value = tau
        times.append(w.redraw_ms)
        assert w.state.beta == pytest.approx(tau)
    assert w.image.value != image and w.readout.value != text
    assert float(w.state.final["ipo"][0]) < 0.5  # tau = 2: IPO stays near the uniform reference
    print(f"bandit widget redraw: median {sorted(times)[2]:.1f} ms, max {max(times):.1f} ms")


def test_static_bandit_figure_draws_the_state(sweep):
    state = bandit_tau_state(sweep, 1.0)
    fig = plot_bandit_tau(state)
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == [loss.upper() for loss in state.mean]
    for ax, loss in zip(fig.axes, state.mean):
        curves = {line.get_label(): line for line in ax.get_lines() if line.get_label() in ("a", "b", "c")}
        for action, label in enumerate("abc"):
            assert list(curves[label].get_xdata()) == pytest.approx(state.steps.tolist())
            assert list(curves[label].get_ydata()) == pytest.approx(state.mean[loss][:, action].tolist())
        optimum = sorted(float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_linestyle() == "--")
        assert optimum == pytest.approx(sorted(state.ipo_optimum.tolist()))
    assert not _still_animated(fig)
