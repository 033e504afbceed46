"""The margin explorer (notebook 18.2): every pairwise loss of the registry against its margin
``h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]``, in the units it sees (summed or averaged
log-probs: ``spec.average_logps``), each unit with its own row, h and beta. Values and dL/dh come from the library's
losses and autograd in float64.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ...maths.losses import PAIRWISE_LOSSES, LossSpec, loss_spec
from .canvas import BlitFigure, explorer, slider, text_table

UNITS = ("summed", "averaged")
H_RANGES = {"summed": (-20.0, 60.0), "averaged": (-2.0, 6.0)}
BETA_SLIDERS = {"summed": (-2.0, 0.0), "averaged": (-1.3, 0.3)}  # log10 ranges
NOT_COMPARABLE = (
    "The rows are in different units: h summed over tokens equals n times h averaged only when both "
    "responses have n tokens, so neither h nor beta carries over from one row to the other."
)


@dataclass(frozen=True)
class LossCurve:
    """One loss at one setting: ``value`` and ``grad`` (dL/dh) at ``h``, the curves over ``h_grid``, and
    ``stops_at``, the smallest h of the grid's range where dL/dh >= 0 (None: it pushes h up everywhere)."""

    label: str
    units: str
    beta: float
    h: float
    value: float
    grad: float
    h_grid: tuple
    values: tuple
    grads: tuple
    stops_at: float | None

    @property
    def push(self) -> str:
        return "pushes h up" if self.grad < 0 else ("pushes h down" if self.grad > 0 else "no push")


@dataclass(frozen=True)
class MarginLossState:
    """The explorer at one setting of its sliders: ``curves[label]`` for every drawn loss, and the sliders."""

    h: dict
    beta: dict
    offset: float
    label_smoothing: float
    curves: dict


def _grad(spec: LossSpec, h: torch.Tensor, beta: float, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``spec``'s losses and dL/dh at margins h (N,): the chosen log-ratio is h, the rest 0 (None if reference-free)."""
    h = h.detach().requires_grad_(True)
    zeros = torch.zeros_like(h)
    ref = zeros if spec.needs_reference else None
    values = spec(h, zeros, ref, ref, beta=beta, **options)  # (N,)
    (grads,) = torch.autograd.grad(values.sum(), h)  # per-pair losses: d(sum)/dh_i = dL_i/dh_i
    return values.detach(), grads + 0.0  # + 0.0 turns -0.0 into 0.0


def push_stops_at(spec, *, beta: float, h_range=H_RANGES["summed"], n_grid: int = 401, **options) -> float | None:
    """The smallest h in ``h_range`` where ``dL/dh >= 0`` (where the loss stops pushing the margin up), on a grid then
    by 40 bisections: 1/(2 tau) for IPO, 1/beta for the hinge, log((1-eps)/eps)/beta for cDPO, None for DPO."""
    spec = loss_spec(spec)
    grid = torch.linspace(*h_range, n_grid, dtype=torch.float64)
    stopped = (_grad(spec, grid, beta, options)[1] >= 0).nonzero()
    if not len(stopped):
        return None
    k = int(stopped[0])
    if k == 0:
        return float(grid[0])
    low, high = float(grid[k - 1]), float(grid[k])
    for _ in range(40):
        mid = 0.5 * (low + high)
        stopped = _grad(spec, torch.tensor([mid], dtype=torch.float64), beta, options)[1].item() >= 0
        low, high = (low, mid) if stopped else (mid, high)
    return high


def _variants(spec: LossSpec, offset: float, label_smoothing: float) -> dict[str, dict]:
    """The drawn settings of one loss: plain, and with each of offset / label_smoothing that its function takes."""
    keywords = inspect.signature(spec.fn).parameters
    options = {"offset m": ("offset", offset), "flip rate eps": ("label_smoothing", label_smoothing)}
    return {spec.name: {}} | {f"{spec.name}, {k}": {n: v} for k, (n, v) in options.items() if n in keywords}


def margin_losses_state(
    h: dict, beta: dict, *, offset: float = 1.0, label_smoothing: float = 0.1, losses=None, n_grid: int = 201
) -> MarginLossState:
    """Every loss of ``losses`` (registry names or specs; default all) at the margin and beta of its units: ``h`` and
    ``beta`` are ``{"summed": ..., "averaged": ...}``. ``offset`` (m) and ``label_smoothing`` (eps in [0, 0.5)) are
    drawn for the losses whose function takes them; each curve has ``n_grid`` points over ``H_RANGES``."""
    curves = {}
    for name in losses or PAIRWISE_LOSSES:
        spec = loss_spec(name)
        units = "averaged" if spec.average_logps else "summed"
        at = float(h[units])
        if at != at:
            raise ValueError(f"h[{units!r}] must be a number, got nan")
        grid = torch.linspace(*H_RANGES[units], n_grid, dtype=torch.float64)
        points = torch.cat([torch.tensor([at], dtype=torch.float64), grid])  # (1 + n_grid,): h, then the grid
        for label, options in _variants(spec, offset, label_smoothing).items():
            values, grads = _grad(spec, points, beta[units], options)
            stops = push_stops_at(spec, beta=beta[units], h_range=H_RANGES[units], **options)
            curves[label] = LossCurve(
                label, units, float(beta[units]), at, values[0].item(), grads[0].item(),
                tuple(grid.tolist()), tuple(values[1:].tolist()), tuple(grads[1:].tolist()), stops,
            )  # fmt: skip
    return MarginLossState(dict(h), dict(beta), float(offset), float(label_smoothing), curves)


HEADER = ["loss", "log-probs", "beta", "L", "dL/dh", "at this h", "stops pushing h up at"]


def margin_readout_text(state: MarginLossState) -> str:
    """Each loss's units, beta, value, gradient and where it stops pushing, then the units warning."""
    settings = ", ".join(f"h {u} = {state.h[u]:+.2f}" for u in UNITS if u in state.h)
    rows = [
        [c.label, c.units, f"{c.beta:.3g}", f"{c.value:.3f}", f"{c.grad:+.3f}", c.push]
        + ["never (in range)" if c.stops_at is None else f"{c.stops_at:.3f}"]
        for c in state.curves.values()
    ]
    settings += f"; m = {state.offset:g}, eps = {state.label_smoothing:g}"
    return "\n".join([settings, text_table(HEADER, rows), NOT_COMPARABLE])


class MarginLossFigure(BlitFigure):
    """One row per unit: the losses against h (left) and dL/dh (right), dots at the current h; dashed: with offset
    m or flip rate eps; dotted vertical lines: where each loss stops pushing h up."""

    def __init__(self, state: MarginLossState, *, figsize=(9.0, 5.2), dpi: int = 80):
        super().__init__(figsize=figsize, dpi=dpi)
        units = [u for u in UNITS if any(c.units == u for c in state.curves.values())]
        axes = self.fig.subplots(len(units), 2, squeeze=False)
        self.axes = {u: axes[i] for i, u in enumerate(units)}
        self.artists = {}
        for i, curve in enumerate(state.curves.values()):
            ax_loss, ax_grad = self.axes[curve.units]
            style = dict(color=f"C{i}", lw=1.6, ls="--" if "," in curve.label else "-")
            self.artists[curve.label] = (
                ax_loss.plot([], [], label=curve.label, **style)[0],
                ax_grad.plot([], [], **style)[0],
                ax_loss.plot([], [], "o", color=f"C{i}")[0],
                ax_grad.plot([], [], "o", color=f"C{i}")[0],
                ax_grad.axvline(0, color=f"C{i}", ls=":", lw=1),
            )
        for unit, (ax_loss, ax_grad) in self.axes.items():
            ax_grad.axhline(0.0, color="k", lw=0.8)
            ax_grad.plot([], [], "o", color="0.4", label="at the current h")
            ax_grad.plot([], [], ":", color="0.4", label="where it stops pushing h up")
            ax_grad.legend(loc="lower right", fontsize=7)
            for ax, ylabel in ((ax_loss, "loss L"), (ax_grad, "dL/dh")):
                ax.set(xlim=H_RANGES[unit], xlabel=f"margin h, {unit} log-probs (nats)", ylabel=ylabel)
            ax_loss.set_ylim(0.0, 5.0)
            ax_loss.legend(loc="upper right", fontsize=7, title=f"{unit} log-probs", title_fontsize=7)
        first = self.axes[units[0]]
        first[0].set_title("loss against h (dot: the current h)", fontsize=9)
        first[1].set_title("dL/dh (dotted: where the push stops)", fontsize=9)
        self.freeze([a for group in self.artists.values() for a in group])

    def update(self, state: MarginLossState) -> None:
        for label, (curve, grad_curve, dot, grad_dot, stop) in self.artists.items():
            c = state.curves[label]
            curve.set_data(c.h_grid, c.values)
            grad_curve.set_data(c.h_grid, c.grads)
            dot.set_data([c.h], [c.value])
            grad_dot.set_data([c.h], [c.grad])
            stop.set_visible(c.stops_at is not None)
            stop.set_xdata([c.stops_at or 0.0] * 2)
        for unit, (_, ax_grad) in self.axes.items():
            self.fit_ylim(ax_grad, max(max(map(abs, c.grads)) for c in state.curves.values() if c.units == unit))


def build_margin_widget(
    *, h=None, beta=None, offset: float = 1.0, label_smoothing: float = 0.1, losses=None
):  # fmt: skip
    """The margin explorer: per unit a beta (tau) and an h slider, plus the offset m and the flip rate eps.

    ``h`` and ``beta``: ``{"summed": ..., "averaged": ...}`` start values (default h 10 and 1.5, beta 0.1
    and 0.5). Returns an ``ipywidgets.VBox`` with ``h_sliders``, ``beta_sliders`` (dicts by unit), ``offset_slider``,
    ``eps_slider``, ``readout`` (:func:`margin_readout_text`), ``image``, ``state`` and ``redraw_ms``.
    """
    import ipywidgets as widgets

    h = {"summed": 10.0, "averaged": 1.5, **(h or {})}
    beta = {"summed": 0.1, "averaged": 0.5, **(beta or {})}
    h_sliders = {u: slider("FloatSlider", f"h ({u})", h[u], min=H_RANGES[u][0], max=H_RANGES[u][1], step=0.05)
                 for u in UNITS}  # fmt: skip
    beta_sliders = {u: slider("FloatLogSlider", f"beta ({u})", beta[u], min=BETA_SLIDERS[u][0],
                              max=BETA_SLIDERS[u][1], step=0.01, readout_format=".3f") for u in UNITS}  # fmt: skip
    offset_slider = slider("FloatSlider", "offset m", offset, min=0.0, max=3.0, step=0.05)
    eps_slider = slider("FloatSlider", "flip rate eps", label_smoothing, min=0.0, max=0.45, step=0.01)

    def compute():
        h, beta = ({u: s.value for u, s in group.items()} for group in (h_sliders, beta_sliders))
        return margin_losses_state(h, beta, offset=offset_slider.value, label_smoothing=eps_slider.value, losses=losses)

    columns = [widgets.VBox([beta_sliders[u], h_sliders[u]]) for u in UNITS]
    controls = [widgets.HBox([*columns, widgets.VBox([offset_slider, eps_slider])])]
    sliders = [*h_sliders.values(), *beta_sliders.values(), offset_slider, eps_slider]
    return explorer(
        controls, sliders, compute, MarginLossFigure(compute()), margin_readout_text, h_sliders=h_sliders,
        beta_sliders=beta_sliders, offset_slider=offset_slider, eps_slider=eps_slider,
    )  # fmt: skip
