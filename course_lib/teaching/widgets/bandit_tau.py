"""The bandit explorer of notebook 18.2 (IPO, Sec. 6), as a pure callback plus a thin ipywidgets builder.

The IPO paper's toy experiment on D1 at one tau, read from the stored sweep
(:func:`course_lib.toyworld.bandit.load_d1_sweep`); :func:`bandit_tau_state` summarises it. The maths
(the exact KL, IPO's closed-form optimum) comes from :mod:`course_lib.maths.bandit`; this module only
arranges and draws it. The figure is a :class:`~course_lib.teaching.widgets.canvas.BlitFigure`.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import torch

from ...maths.bandit import bandit_kl, ipo_bandit_optimum
from .canvas import BlitFigure


@dataclass(frozen=True)
class BanditTauState:
    """The D1 bandit at one tau: per loss, the seeds' mean and 95% interval of each action's probability.

    ``mean[loss]``, ``low[loss]``, ``high[loss]``: (T, n) tensors over the recorded steps ``steps`` (T,);
    ``final[loss]``: (n,) mean final probabilities; ``final_kl[loss]``: mean exact KL from the uniform
    reference at the end; ``ipo_optimum``: (n,) IPO's closed form at this tau.
    """

    beta: float
    steps: torch.Tensor
    mean: dict
    low: dict
    high: dict
    final: dict
    final_kl: dict
    ipo_optimum: torch.Tensor


def bandit_tau_state(sweep: dict, beta: float) -> BanditTauState:
    """Summarise the stored D1 sweep (:func:`course_lib.toyworld.bandit.load_d1_sweep`) at one of its taus.

    The interval is mean +- 1.96 standard errors over seeds (the paper's Figure 1 shows 95% intervals).
    Raises ValueError if ``beta`` is not one of the sweep's taus.
    """
    betas = [float(b) for b in sweep["betas"]]
    matches = [i for i, b in enumerate(betas) if abs(b - float(beta)) < 1e-9]
    if not matches:
        raise ValueError(f"beta must be one of the sweep's taus {betas}, got {beta!r}")
    j = matches[0]
    probs = sweep["probs"]  # (L, B, S, T, n)
    n_seeds = probs.shape[2]
    steps = torch.arange(1, probs.shape[3] + 1) * sweep["record_every"]  # (T,)
    mean, low, high, final, final_kl = {}, {}, {}, {}, {}
    for i, loss in enumerate(sweep["losses"]):
        runs = probs[i, j].double()  # (S, T, n)
        mu = runs.mean(0)
        half = 1.96 * runs.std(0) / n_seeds**0.5 if n_seeds > 1 else torch.zeros_like(mu)
        mean[loss], low[loss], high[loss] = mu, (mu - half).clamp(0, 1), (mu + half).clamp(0, 1)
        final[loss] = mu[-1]
        final_kl[loss] = float(bandit_kl(runs[:, -1].float()).mean())
    optimum = ipo_bandit_optimum([tuple(p) for p in sweep["preferences"]], beta=betas[j])
    return BanditTauState(
        beta=betas[j], steps=steps, mean=mean, low=low, high=high, final=final, final_kl=final_kl, ipo_optimum=optimum
    )


def bandit_readout_text(state: BanditTauState) -> str:
    """Final mean probabilities of each loss, IPO's optimum, and the final KL, as plain text."""
    fmt = lambda p: "(" + ", ".join(f"{x:.3f}" for x in p.tolist()) + ")"  # noqa: E731
    lines = [f"tau = {state.beta:g}, after {int(state.steps[-1])} steps (mean over seeds):"]
    for loss, final in state.final.items():
        lines.append(f"  {loss.upper():<4} pi(a, b, c) = {fmt(final)}   KL(pi || uniform) = {state.final_kl[loss]:.3f}")
    lines.append(
        f"  IPO optimum (closed form)     = {fmt(state.ipo_optimum)}   KL = {float(bandit_kl(state.ipo_optimum)):.3f}"
    )
    return "\n".join(lines)


class BanditTauFigure(BlitFigure):
    """Action probabilities over steps, one panel per loss, with IPO's optimum as dashed lines."""

    ACTION_COLOURS = ("tab:blue", "tab:orange", "tab:green")

    def __init__(self, losses=("dpo", "ipo"), *, max_step: int = 18000, figsize=(9.0, 3.0), dpi: int = 80):
        super().__init__(figsize=figsize, dpi=dpi)
        self.losses = tuple(losses)
        axes = self.fig.subplots(1, len(self.losses), sharey=True)
        self.axes = dict(zip(self.losses, axes))
        self.lines, self.bands, self.optimum_lines = {}, {}, {}
        for loss, ax in self.axes.items():
            for a, colour in enumerate(self.ACTION_COLOURS):
                self.lines[loss, a] = ax.plot([], [], color=colour, lw=1.5, label="abc"[a])[0]
                self.bands[loss, a] = ax.fill_between([0, 1], [0, 0], [0, 0], color=colour, alpha=0.25, lw=0)
                self.optimum_lines[loss, a] = ax.axhline(0.0, color=colour, ls="--", lw=1)
            ax.set_xlim(0, max_step)
            ax.set_xticks([round(max_step * k / 3) for k in range(4)])
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("step")
            ax.set_title(f"{loss.upper()}: mean and 95% interval over seeds; dashed: IPO optimum", fontsize=9)
        axes[0].set_ylabel("pi(action)")
        axes[0].legend(loc="center right", fontsize=8, title="action", title_fontsize=8)
        self.fig.tight_layout()
        self.freeze([*self.lines.values(), *self.bands.values(), *self.optimum_lines.values()])

    def update(self, state: BanditTauState) -> None:
        steps = state.steps.tolist()
        for loss in self.losses:
            for a in range(len(self.ACTION_COLOURS)):
                self.lines[loss, a].set_data(steps, state.mean[loss][:, a].tolist())
                self.bands[loss, a].set_data(steps, state.low[loss][:, a].tolist(), state.high[loss][:, a].tolist())
                optimum = float(state.ipo_optimum[a])
                self.optimum_lines[loss, a].set_ydata([optimum, optimum])


def plot_bandit_tau(state: BanditTauState):
    """A static figure of :class:`BanditTauFigure` at one tau; returns the matplotlib Figure."""
    figure = BanditTauFigure(tuple(state.mean), max_step=int(state.steps[-1]))
    figure.update(state)
    return figure.static()


def build_bandit_widget(sweep: dict, *, beta: float | None = None):
    """Builds the bandit explorer: a tau slider over the sweep's taus, the curves, and a readout.

    Returns an ``ipywidgets.VBox`` with ``beta_slider`` (a SelectionSlider), ``readout`` (HTML with a
    <pre> block), ``image``, ``state`` (the latest :class:`BanditTauState`) and ``redraw_ms``.
    """
    import ipywidgets as widgets

    betas = [float(b) for b in sweep["betas"]]
    beta_slider = widgets.SelectionSlider(
        options=[(f"{b:g}", b) for b in betas],
        value=betas[0] if beta is None else float(beta),
        description="tau",
        layout=widgets.Layout(width="420px"),
    )
    readout = widgets.HTML()
    image = widgets.Image(format="png")
    figure = BanditTauFigure(tuple(sweep["losses"]), max_step=int(sweep["steps"]))
    box = widgets.VBox([beta_slider, image, readout])

    def redraw(_change=None):
        start = time.perf_counter()
        state = bandit_tau_state(sweep, beta_slider.value)
        readout.value = f"<pre>{html.escape(bandit_readout_text(state))}</pre>"
        figure.update(state)
        image.value = figure.png()
        box.state = state
        box.redraw_ms = 1000.0 * (time.perf_counter() - start)

    beta_slider.observe(redraw, names="value")
    box.beta_slider, box.readout, box.image, box.figure = beta_slider, readout, image, figure
    redraw()
    return box


def plot_bandit_grid(sweep: dict, betas, *, figsize=None):
    """Action probabilities over steps: one row per loss, one column per tau in ``betas`` (pyplot figure).

    Each panel shows the seeds' mean (line) and 95% interval (band) of pi(a), pi(b), pi(c), and IPO's
    closed-form optimum at that tau (dashed). Returns the Figure; end the cell with ``plt.show()``.
    """
    import matplotlib.pyplot as plt

    losses = tuple(sweep["losses"])
    fig, axes = plt.subplots(
        len(losses),
        len(betas),
        figsize=figsize or (3.2 * len(betas), 2.6 * len(losses)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for col, beta in enumerate(betas):
        state = bandit_tau_state(sweep, beta)
        steps = state.steps.tolist()
        for row, loss in enumerate(losses):
            ax = axes[row][col]
            for a, colour in enumerate(BanditTauFigure.ACTION_COLOURS):
                ax.plot(steps, state.mean[loss][:, a].tolist(), color=colour, lw=1.5, label="abc"[a])
                ax.fill_between(
                    steps,
                    state.low[loss][:, a].tolist(),
                    state.high[loss][:, a].tolist(),
                    color=colour,
                    alpha=0.25,
                    lw=0,
                )
                ax.axhline(float(state.ipo_optimum[a]), color=colour, ls="--", lw=0.8)
            ax.set_title(f"{loss.upper()}, tau = {beta:g}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            if row == len(losses) - 1:
                ax.set_xlabel("step")
                ax.set_xticks([0, 6000, 12000, 18000])
            if col == 0:
                ax.set_ylabel("pi(action)")
    axes[0][0].legend(fontsize=8, title="action", title_fontsize=8, loc="center right")
    fig.tight_layout()
    return fig
