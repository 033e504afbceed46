"""The margin explorer of notebook 18.2 (IPO, Sec. 5), as a pure callback plus a thin ipywidgets builder.

Every pairwise loss as a function of the margin
``h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]``, with its gradient ``dL/dh``,
for DPO, IPO, hinge, margin DPO (an offset ``m``) and cDPO (a label-flip rate ``eps``).
:func:`margin_losses_state` computes everything with the library's losses (:mod:`course_lib.maths.losses`)
and autograd; this module only arranges and draws it, and never mutates its inputs. The figure is a
:class:`~course_lib.teaching.widgets.canvas.BlitFigure`.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import torch

from ...maths.losses import dpo_loss, hinge_loss, ipo_loss
from .canvas import BlitFigure

#: Loss names in the order the explorer lists them.
LOSS_NAMES: tuple[str, ...] = ("DPO", "IPO", "hinge", "margin DPO", "cDPO")
LOSS_COLOURS = {
    "DPO": "tab:blue",
    "IPO": "tab:orange",
    "hinge": "tab:green",
    "margin DPO": "tab:purple",
    "cDPO": "tab:brown",
}
H_RANGE: tuple[float, float] = (-4.0, 12.0)
BETA_RANGE: tuple[float, float] = (0.05, 2.0)
LOSS_YLIM: tuple[float, float] = (0.0, 5.0)
GRAD_YLIM: tuple[float, float] = (-1.5, 1.5)


def _pairwise_losses(h: torch.Tensor, *, beta: float, margin: float, label_smoothing: float) -> dict[str, torch.Tensor]:
    """Each library loss at margins ``h`` (N,): the chosen log-ratio is h, the rest are 0."""
    zeros = torch.zeros_like(h)
    args = (h, zeros, zeros, zeros)  # h = (h - 0) - (0 - 0)
    return {
        "DPO": dpo_loss(*args, beta=beta),
        "IPO": ipo_loss(*args, beta=beta),
        "hinge": hinge_loss(*args, beta=beta),
        "margin DPO": dpo_loss(*args, beta=beta, offset=margin),
        "cDPO": dpo_loss(*args, beta=beta, label_smoothing=label_smoothing),
    }


@dataclass(frozen=True)
class MarginLossState:
    """Everything the margin explorer shows for one setting of its sliders.

    ``values[name]`` and ``grads[name]`` are the loss and ``dL/dh`` at ``h``; ``curve_values[name]``
    and ``curve_grads[name]`` the same over ``h_grid``. ``ipo_target = 1/(2 beta)`` is where IPO's
    gradient changes sign; ``hinge_corner = 1/beta`` where the hinge's gradient becomes 0;
    ``margin_midpoint = margin/beta`` where margin DPO's loss is log 2.
    """

    h: float
    beta: float
    margin: float
    label_smoothing: float
    values: dict
    grads: dict
    h_grid: tuple
    curve_values: dict
    curve_grads: dict
    ipo_target: float
    hinge_corner: float
    margin_midpoint: float

    def grad_sign(self, name: str) -> str:
        """ "pushes h up" (dL/dh < 0), "pushes h down" (> 0) or "no push" (exactly 0)."""
        g = self.grads[name]
        return "pushes h up" if g < 0 else ("pushes h down" if g > 0 else "no push")


def margin_losses_state(
    h: float,
    *,
    beta: float,
    margin: float = 1.0,
    label_smoothing: float = 0.1,
    h_range: tuple[float, float] = H_RANGE,
    n_grid: int = 201,
) -> MarginLossState:
    """Every pairwise loss and its gradient ``dL/dh`` at one margin ``h`` and over a grid.

    DPO ``-logsigmoid(beta h)`` (Rafailov et al. 2023, Eq. 7); IPO ``(h - 1/(2 beta))**2`` (Azar et al.
    2023, Eq. 17); hinge ``max(0, 1 - beta h)``; margin DPO ``-logsigmoid(beta h - m)``; cDPO
    ``-(1-eps) logsigmoid(beta h) - eps logsigmoid(-beta h)``. All from :mod:`course_lib.maths.losses`, with
    gradients by autograd in float64. ``beta`` is IPO's tau.

    Args:
        h: the margin (difference of log-ratios) at which to read values and gradients.
        beta: > 0.
        margin: m, margin DPO's offset.
        label_smoothing: eps in [0, 0.5), cDPO's label-flip rate.
        h_range, n_grid: the grid of the curves.

    Returns:
        A :class:`MarginLossState`.
    """
    h = float(h)
    if h != h:
        raise ValueError("h must be a number, got nan")
    point = torch.tensor([h], dtype=torch.float64, requires_grad=True)  # (1,)
    grid = torch.linspace(h_range[0], h_range[1], n_grid, dtype=torch.float64, requires_grad=True)  # (N,)
    at_point = _pairwise_losses(point, beta=beta, margin=margin, label_smoothing=label_smoothing)
    on_grid = _pairwise_losses(grid, beta=beta, margin=margin, label_smoothing=label_smoothing)
    values, grads, curve_values, curve_grads = {}, {}, {}, {}
    for name in LOSS_NAMES:
        (g_point,) = torch.autograd.grad(at_point[name].sum(), point)
        (g_grid,) = torch.autograd.grad(on_grid[name].sum(), grid)  # losses are per pair: d(sum)/dh_i = dL_i/dh_i
        values[name] = float(at_point[name].detach())
        grads[name] = float(g_point) + 0.0  # + 0.0 turns -0.0 into 0.0
        curve_values[name] = tuple(on_grid[name].detach().tolist())
        curve_grads[name] = tuple(g_grid.tolist())
    return MarginLossState(
        h=h,
        beta=float(beta),
        margin=float(margin),
        label_smoothing=float(label_smoothing),
        values=values,
        grads=grads,
        h_grid=tuple(grid.detach().tolist()),
        curve_values=curve_values,
        curve_grads=curve_grads,
        ipo_target=1.0 / (2.0 * beta),
        hinge_corner=1.0 / beta,
        margin_midpoint=margin / beta,
    )


def margin_readout_text(state: MarginLossState, *, digits: int = 3) -> str:
    """The readout as plain text: each loss's value and gradient at h, and IPO's sign change."""
    lines = [
        f"h = {state.h:+.2f}, beta (tau) = {state.beta:.3g}, m = {state.margin:.3g}, eps = {state.label_smoothing:.3g}",
        "loss          value     dL/dh    effect",
    ]
    for name in LOSS_NAMES:
        lines.append(
            f"{name:<11} {state.values[name]:8.{digits}f}  {state.grads[name]:+8.{digits}f}    {state.grad_sign(name)}"
        )
    lines.append(
        f"IPO's gradient changes sign at h = 1/(2 tau) = {state.ipo_target:.3g}; "
        f"the hinge's is 0 from h = 1/tau = {state.hinge_corner:.3g}; DPO's is < 0 for every h."
    )
    return "\n".join(lines)


def margin_readout_html(state: MarginLossState, *, digits: int = 3) -> str:
    """The same content as :func:`margin_readout_text`, as an HTML table for an ``HTML`` widget."""
    cell = 'style="padding:1px 10px;text-align:right"'
    rows = "".join(
        f'<tr><td style="padding:1px 10px;color:{LOSS_COLOURS[name]}"><b>{html.escape(name)}</b></td>'
        f"<td {cell}>{state.values[name]:.{digits}f}</td><td {cell}>{state.grads[name]:+.{digits}f}</td>"
        f"<td {cell}>{state.grad_sign(name)}</td></tr>"
        for name in LOSS_NAMES
    )
    return (
        f"<p>h = {state.h:+.2f}, &tau; = {state.beta:.3g}, m = {state.margin:.3g}, "
        f"&epsilon; = {state.label_smoothing:.3g}</p>"
        f"<table><tr><th>loss</th><th>value</th><th>dL/dh</th><th></th></tr>{rows}</table>"
        f"<p>IPO's gradient changes sign at <b>h = 1/(2&tau;) = {state.ipo_target:.3g}</b>; the hinge's is 0 "
        f"from h = 1/&tau; = {state.hinge_corner:.3g}; DPO's is negative for every h (it never stops pushing).</p>"
    )


class MarginLossFigure(BlitFigure):
    """Loss (left) and gradient dL/dh (right) against h, built once and updated in place.

    The axes have fixed limits (``LOSS_YLIM``, ``GRAD_YLIM``), so that only the curves, the markers
    at the current h and the vertical guides move; a redraw blits those (under 100 ms on CPU).
    IPO's parabola leaves the frame for small tau: read its value in the table.
    """

    def __init__(self, *, names: tuple[str, ...] = LOSS_NAMES, h_range=H_RANGE, figsize=(9.0, 3.2), dpi: int = 80):
        super().__init__(figsize=figsize, dpi=dpi)
        self.names = names
        self.ax_loss, self.ax_grad = self.fig.subplots(1, 2)
        self.curves, self.grad_curves, self.points, self.grad_points = {}, {}, {}, {}
        for name in names:
            colour = LOSS_COLOURS[name]
            style = dict(color=colour, lw=1.6, ls="--" if name in ("margin DPO", "cDPO") else "-")
            self.curves[name] = self.ax_loss.plot([], [], label=name, **style)[0]
            self.grad_curves[name] = self.ax_grad.plot([], [], **style)[0]
            self.points[name] = self.ax_loss.plot([], [], "o", color=colour, ms=6)[0]
            self.grad_points[name] = self.ax_grad.plot([], [], "o", color=colour, ms=6)[0]
        self.guides = [ax.axvline(0.0, color="tab:orange", lw=1, ls=":") for ax in (self.ax_loss, self.ax_grad)]
        self.h_lines = [ax.axvline(0.0, color="k", lw=0.8, alpha=0.5) for ax in (self.ax_loss, self.ax_grad)]
        self.ax_grad.axhline(0.0, color="k", lw=0.8)
        for ax, ylim, ylabel in ((self.ax_loss, LOSS_YLIM, "loss"), (self.ax_grad, GRAD_YLIM, "dL/dh")):
            ax.set_xlim(*h_range)
            ax.set_ylim(*ylim)
            ax.set_xlabel("margin h (difference of log-ratios)")
            ax.set_ylabel(ylabel)
        self.ax_loss.legend(loc="upper right", fontsize=8)
        self.ax_loss.set_title("loss against h (dot: the current h)", fontsize=9)
        self.ax_grad.set_title("dL/dh; IPO's changes sign at h = 1/(2 tau) (dotted)", fontsize=9)
        self.fig.tight_layout()
        self.freeze(
            [
                *self.curves.values(),
                *self.grad_curves.values(),
                *self.points.values(),
                *self.grad_points.values(),
                *self.guides,
                *self.h_lines,
            ]
        )

    def update(self, state: MarginLossState) -> None:
        """Moves every artist to show ``state``."""
        for name in self.names:
            self.curves[name].set_data(state.h_grid, state.curve_values[name])
            self.grad_curves[name].set_data(state.h_grid, state.curve_grads[name])
            self.points[name].set_data([state.h], [state.values[name]])
            self.grad_points[name].set_data([state.h], [state.grads[name]])
        for line in self.guides:
            line.set_xdata([state.ipo_target, state.ipo_target])
        for line in self.h_lines:
            line.set_xdata([state.h, state.h])


def plot_margin_losses(state: MarginLossState):
    """A static figure of one state of the margin explorer; returns the matplotlib Figure."""
    figure = MarginLossFigure()
    figure.update(state)
    return figure.static()


def build_margin_widget(
    *,
    beta: float = 0.5,
    h: float = 1.5,
    margin: float = 1.0,
    label_smoothing: float = 0.1,
    names: tuple[str, ...] = LOSS_NAMES,
):
    """Builds the margin explorer: sliders for tau (beta), h, margin m and label-flip rate eps.

    Returns an ``ipywidgets.VBox`` with extra attributes: ``beta_slider``, ``h_slider``,
    ``margin_slider``, ``eps_slider``, ``readout`` (HTML), ``image`` (PNG), ``state`` (the latest
    :class:`MarginLossState`) and ``redraw_ms`` (the latest redraw: callback + readout + figure).
    """
    import ipywidgets as widgets

    layout = widgets.Layout(width="330px")
    beta_slider = widgets.FloatLogSlider(
        value=beta,
        base=10,
        min=-1.3,
        max=0.3,
        step=0.01,
        description="tau (beta)",
        readout_format=".3f",
        layout=layout,
        style={"description_width": "80px"},
    )
    h_slider = widgets.FloatSlider(
        value=h,
        min=H_RANGE[0],
        max=H_RANGE[1],
        step=0.05,
        description="h",
        readout_format=".2f",
        layout=layout,
        style={"description_width": "80px"},
    )
    margin_slider = widgets.FloatSlider(
        value=margin,
        min=0.0,
        max=3.0,
        step=0.05,
        description="margin m",
        readout_format=".2f",
        layout=layout,
        style={"description_width": "80px"},
    )
    eps_slider = widgets.FloatSlider(
        value=label_smoothing,
        min=0.0,
        max=0.45,
        step=0.01,
        description="cDPO eps",
        readout_format=".2f",
        layout=layout,
        style={"description_width": "80px"},
    )
    readout = widgets.HTML()
    image = widgets.Image(format="png")
    figure = MarginLossFigure(names=names)
    box = widgets.VBox(
        [
            widgets.HBox([widgets.VBox([beta_slider, h_slider]), widgets.VBox([margin_slider, eps_slider])]),
            image,
            readout,
        ]
    )

    def redraw(_change=None):
        start = time.perf_counter()
        state = margin_losses_state(
            h_slider.value, beta=beta_slider.value, margin=margin_slider.value, label_smoothing=eps_slider.value
        )
        readout.value = margin_readout_html(state)
        figure.update(state)
        image.value = figure.png()
        box.state = state
        box.redraw_ms = 1000.0 * (time.perf_counter() - start)

    for slider in (beta_slider, h_slider, margin_slider, eps_slider):
        slider.observe(redraw, names="value")
    box.beta_slider, box.h_slider, box.margin_slider, box.eps_slider = beta_slider, h_slider, margin_slider, eps_slider
    box.readout, box.image, box.figure = readout, image, figure
    redraw()
    return box
