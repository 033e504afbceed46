"""The bandit explorer (notebook 18.2): the IPO paper's D1 experiment (Sec. 5.4) at one tau, from the stored sweep."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...maths.bandit import bandit_kl, ipo_bandit_optimum
from .canvas import BlitFigure, explorer, slider

ACTION_COLOURS = ("tab:blue", "tab:orange", "tab:green")


@dataclass(frozen=True)
class BanditTauState:
    """``mean[loss]``, ``low[loss]``, ``high[loss]``: (T + 1, n) over ``steps`` (T + 1,), step 0 included;
    ``final[loss]``: (n,) mean final probabilities; ``final_kl[loss]``: mean exact KL from the reference at the
    end; ``ipo_optimum``: (n,) IPO's closed form at this tau."""

    beta: float
    steps: torch.Tensor
    mean: dict
    low: dict
    high: dict
    final: dict
    final_kl: dict
    ipo_optimum: torch.Tensor


def bandit_tau_state(sweep: dict, beta: float) -> BanditTauState:
    """The stored D1 sweep (``load_d1_sweep``) at one of its taus, from step 0 (the reference): each loss's action
    probabilities, mean +- 1.96 standard errors over seeds, its exact KL, and IPO's closed-form optimum."""
    betas = [float(b) for b in sweep["betas"]]
    matches = [i for i, b in enumerate(betas) if abs(b - float(beta)) < 1e-9]
    if not matches:
        raise ValueError(f"beta must be one of the sweep's taus {betas}, got {beta!r}")
    probs = sweep["probs"][:, matches[0]].double()  # (L, S, T, n): the policy after updates record_every, 2 ...
    n_losses, n_seeds, n_records, n_actions = probs.shape
    start = torch.as_tensor(sweep.get("ref_probs", [1.0 / n_actions] * n_actions), dtype=torch.float64)  # pi_ref
    probs = torch.cat([start.expand(n_losses, n_seeds, 1, n_actions), probs], dim=2)  # (L, S, T + 1, n)
    steps = torch.arange(n_records + 1) * sweep["record_every"]  # (T + 1,)
    mean, low, high, final, final_kl = {}, {}, {}, {}, {}
    for i, loss in enumerate(sweep["losses"]):
        mu = probs[i].mean(0)  # (T + 1, n)
        half = 1.96 * probs[i].std(0) / n_seeds**0.5 if n_seeds > 1 else torch.zeros_like(mu)
        mean[loss], low[loss], high[loss] = mu, (mu - half).clamp(0, 1), (mu + half).clamp(0, 1)
        final[loss] = mu[-1]
        final_kl[loss] = float(bandit_kl(probs[i, :, -1].float()).mean())
    optimum = ipo_bandit_optimum([tuple(p) for p in sweep["preferences"]], beta=betas[matches[0]])
    return BanditTauState(betas[matches[0]], steps, mean, low, high, final, final_kl, optimum)


def bandit_readout_text(state: BanditTauState) -> str:
    """Each loss's final mean probabilities and KL, and IPO's optimum, as plain text."""
    fmt = lambda p: "(" + ", ".join(f"{x:.3f}" for x in p.tolist()) + ")"

    lines = [f"tau = {state.beta:g}, after {int(state.steps[-1])} steps (mean over seeds):"]
    for loss, final in state.final.items():
        lines.append(
            f"  {loss.upper():<4} pi(a, b, c) = {fmt(final)}   KL(pi || reference) = {state.final_kl[loss]:.3f}"
        )
    kl = float(bandit_kl(state.ipo_optimum))
    lines.append(f"  IPO optimum (closed form)     = {fmt(state.ipo_optimum)}   KL = {kl:.3f}")
    return "\n".join(lines)


def _draw_panel(ax, state: BanditTauState, loss: str) -> None:
    """pi(a), pi(b), pi(c) of ``loss`` over steps: mean, 95% band, and IPO's optimum (dashed)."""
    steps = state.steps.tolist()
    for a, colour in enumerate(ACTION_COLOURS):
        mean, low, high = (v[loss][:, a].tolist() for v in (state.mean, state.low, state.high))
        ax.plot(steps, mean, color=colour, lw=1.5, label="abc"[a])
        ax.fill_between(steps, low, high, color=colour, alpha=0.25, lw=0)
        ax.axhline(float(state.ipo_optimum[a]), color=colour, ls="--", lw=1)
    ax.plot([], [], color="0.4", ls="--", lw=1, label="IPO optimum")
    ax.set(xlim=(0, steps[-1]), ylim=(-0.02, 1.02), xlabel="step", xticks=[round(steps[-1] * i / 3) for i in range(4)])
    ax.set_title(f"{loss.upper()}, tau = {state.beta:g}", fontsize=9)


class BanditTauFigure(BlitFigure):
    """One panel per loss, redrawn whole at each tau (a slider of a few values: no blitting needed)."""

    def __init__(self, *, figsize=(9.0, 3.0), dpi: int = 80):
        super().__init__(figsize=figsize, dpi=dpi)

    def update(self, state: BanditTauState) -> None:
        self.fig.clear()
        self.fig.set_layout_engine("constrained")
        axes = self.fig.subplots(1, len(state.mean), sharey=True, squeeze=False)[0]
        for ax, loss in zip(axes, state.mean):
            _draw_panel(ax, state, loss)
        axes[0].set_ylabel("pi(action)")
        axes[0].legend(loc="center right", fontsize=7, title="action", title_fontsize=7)
        self.freeze([])


def build_bandit_widget(sweep: dict, *, beta: float | None = None):
    """The bandit explorer: a tau slider (``beta_slider``) over the sweep's taus, the curves and a readout."""
    betas = [float(b) for b in sweep["betas"]]
    value = betas[0] if beta is None else float(beta)
    beta_slider = slider("SelectionSlider", "tau", value, options=[(f"{b:g}", b) for b in betas])

    compute = lambda: bandit_tau_state(sweep, beta_slider.value)
    return explorer(
        [beta_slider], [beta_slider], compute, BanditTauFigure(), bandit_readout_text, beta_slider=beta_slider
    )


def plot_bandit_grid(sweep: dict, betas, *, figsize=None):
    """Action probabilities over steps: one row per loss, one column per tau in ``betas``; returns the Figure."""
    import matplotlib.pyplot as plt

    losses = tuple(sweep["losses"])
    size = figsize or (3.2 * len(betas), 2.6 * len(losses))
    fig, axes = plt.subplots(len(losses), len(betas), figsize=size, sharex=True, sharey=True, squeeze=False)
    for col, beta in enumerate(betas):
        state = bandit_tau_state(sweep, beta)
        for row, loss in enumerate(losses):
            _draw_panel(axes[row][col], state, loss)
    for row in axes:
        row[0].set_ylabel("pi(action)")
    axes[0][0].legend(fontsize=7, title="action", title_fontsize=7, loc="center right")
    fig.tight_layout()
    return fig
