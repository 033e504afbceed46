"""The IPO notebook's plots: Psi for DPO and IPO, the two-action optimum against tau, per-pair margins against
Eq. 11, and a sweep's reward-KL frontier.

Plotting only: the curves come from :mod:`course_lib.maths` (``ipo_bandit_optimum``) and torch's ``logit``;
the points from training runs. The frontier is :func:`course_lib.teaching.plots.plot_reward_kl_frontier`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from ..maths.bandit import ipo_bandit_optimum
from ..maths.losses import loss_spec
from .plots import plain_log_x, plot_reward_kl_frontier


def plot_psi(*, ax=None):
    """Psi(p) for DPO/RLHF (logit) and IPO (identity), each 0 at p = 1/2 (Azar et al. 2023, Eq. 6).

    The logit's slope 1/(p(1-p)) grows without bound as p -> 1; the identity's slope is 1 everywhere."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    p = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    ax.plot(p, torch.logit(p), label="logit (DPO, RLHF with Bradley-Terry)")
    ax.plot(p, p - 0.5, label="identity (IPO), minus 1/2")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set(xlabel="p*(y > y')", ylabel="Psi(p)", ylim=(-4, 7), title="what each objective pays for a win rate")
    ax.legend(fontsize=8)
    return ax


def plot_two_action_optimum(taus, *, ax=None):
    """pi*(y1) against tau, two actions, y1 always preferred, uniform reference: DPO 1, IPO sigmoid(1/(2 tau))."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    taus = [float(t) for t in taus]
    ipo = [ipo_bandit_optimum([(0, 1)], beta=tau)[0].item() for tau in taus]
    ax.plot(taus, [1.0] * len(taus), color="C0", label="DPO: deterministic for every tau")
    ax.plot(taus, ipo, color="C1", label="IPO: sigmoid(1/(2 tau))")
    ax.axhline(0.5, color="gray", ls=":", lw=1, label="the reference")
    ax.set(xlabel="tau (beta)", ylabel="optimal pi(y1)", ylim=(0.45, 1.03), title="two actions")
    plain_log_x(ax)
    ax.legend(fontsize=8)
    return ax


def plot_margin_histogram(margins: dict, *, target: float, predicted: torch.Tensor, ax=None):
    """Histograms of per-pair margins (``{label: (N,) tensor}``) with Eq. 17's target and the Eq. 11 optimum.

    ``predicted`` is the (M,) Eq. 11 margin of each pair (:func:`course_lib.ipo_optimal_margins`), drawn as an
    outline; its mean and ``target`` = 1/(2 tau) are vertical lines."""
    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    margins = {label: torch.as_tensor(m, dtype=torch.float64) for label, m in margins.items()}
    predicted = predicted.double()
    values = torch.cat([*margins.values(), predicted])
    bins = torch.linspace(values.min().item(), values.max().item(), 41).tolist()
    for label, m in margins.items():
        ax.hist(m.tolist(), bins=bins, alpha=0.45, density=True, label=label)
    ax.hist(predicted.tolist(), bins=bins, histtype="step", color="k", density=True, label="Eq. 11 optimum")
    ax.axvline(target, color="C3", ls="--", label=f"Eq. 17 target 1/(2 tau) = {target:g}")
    ax.axvline(predicted.mean().item(), color="k", ls=":", label="mean of the Eq. 11 optimum")
    ax.set(xlabel="margin h of a pair (averaged log-probs)", ylabel="density")
    ax.legend(fontsize=7)
    return ax


def plot_frontier(points: list[dict], *, reference_reward: float | None = None, ax=None):
    """A sweep's reward against KL: :func:`course_lib.loop.sweep.train_sweep`'s dicts (``loss``, ``beta``,
    ``kl``, ``kl_stderr``, ``reward``, ``reward_stderr``), one colour per loss named with its units, each point
    labelled with its beta, and each loss's Pareto front (:func:`course_lib.teaching.plots.plot_reward_kl_frontier`)."""

    def method(loss: str) -> str:
        return f"{loss} ({'averaged' if loss_spec(loss).average_logps else 'summed'} log-probs)"

    runs = [{**p, "method": method(p["loss"]), "label": f"{p['beta']:g}"} for p in points]
    title = "reward against KL, one point per run (label: beta)"
    return plot_reward_kl_frontier(runs, ax=ax, title=title, log_kl=True, reference_reward=reference_reward)
