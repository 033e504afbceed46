"""The IPO notebook's intuition plots: Psi for DPO and IPO, the two-action optimum against tau, per-pair
margins against Eq. 11, and the reward-against-KL frontier of a sweep.

Plotting only: the curves come from :mod:`course_lib.maths` (``ipo_bandit_optimum``) and torch's own
``logit``; the points from training histories and evaluations. The frontier is drawn by the shared
:func:`course_lib.teaching.plots.plot_reward_kl_frontier`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from ..maths.bandit import ipo_bandit_optimum
from .plots import plot_reward_kl_frontier

LOSS_COLOURS = {"dpo": "C0", "ipo": "C1"}


def plot_psi(*, ax=None):
    """Psi(p) for DPO/RLHF (logit) and IPO (identity), each shifted to 0 at p = 1/2 (Azar et al. 2023, Eq. 6).

    The logit's slope 1/(p(1-p)) grows without bound as p -> 1: a win that is already near-certain is
    still rewarded as much as a large gain near p = 1/2. The identity's slope is 1 everywhere."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    p = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    ax.plot(p, torch.logit(p), label="logit (DPO, RLHF with Bradley-Terry)")
    ax.plot(p, p - 0.5, label="identity (IPO), minus 1/2")
    ax.set(xlabel="p*(y > y')", ylabel="Psi(p)", ylim=(-4, 7), title="what each objective pays for a win rate")
    ax.axhline(0, color="gray", lw=0.5)
    ax.legend(fontsize=8)
    return ax


def plot_two_action_optimum(taus, *, ax=None):
    """pi*(y1) against tau, two actions, y1 always preferred, uniform reference: DPO 1, IPO sigmoid(1/(2 tau))."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    taus = [float(t) for t in taus]
    ipo = [ipo_bandit_optimum([(0, 1)], beta=tau)[0].item() for tau in taus]
    ax.plot(taus, [1.0] * len(taus), color=LOSS_COLOURS["dpo"], label="DPO: deterministic for every tau")
    ax.plot(taus, ipo, color=LOSS_COLOURS["ipo"], label="IPO: sigmoid(1/(2 tau))")
    ax.axhline(0.5, color="gray", ls=":", lw=1)
    ax.annotate("reference", (taus[-1], 0.5), textcoords="offset points", xytext=(-50, 4), fontsize=8, color="gray")
    ax.set(xscale="log", xlabel="tau (beta)", ylabel="optimal pi(y1)", ylim=(0.45, 1.03), title="two actions")
    ax.legend(fontsize=8)
    return ax


def plot_margin_histogram(margins: dict, *, target: float, predicted: torch.Tensor, ax=None):
    """Histograms of per-pair margins (``{label: (N,) tensor}``) with Eq. 17's target and the Eq. 11 optimum.

    ``predicted`` is the (M,) Eq. 11 margin of each pair (:func:`course_lib.ipo_optimal_margins`), drawn as an
    outline; its mean and ``target`` = 1/(2 tau) are marked with vertical lines."""
    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    values = [torch.as_tensor(m, dtype=torch.float64) for m in margins.values()] + [predicted.double()]
    low = min(v.min().item() for v in values)
    high = max(v.max().item() for v in values)
    bins = torch.linspace(low, high, 41).tolist()
    for label, m in margins.items():
        ax.hist(torch.as_tensor(m, dtype=torch.float64).tolist(), bins=bins, alpha=0.45, density=True, label=label)
    ax.hist(predicted.double().tolist(), bins=bins, histtype="step", color="k", density=True, label="Eq. 11 optimum")
    ax.axvline(target, color="C3", ls="--", label=f"Eq. 17 target 1/(2 tau) = {target:g}")
    ax.axvline(predicted.double().mean().item(), color="k", ls=":", label="mean of the Eq. 11 optimum")
    ax.set(xlabel="margin h of a pair (averaged log-probs)", ylabel="density")
    ax.legend(fontsize=7)
    return ax


def plot_frontier(points: list[dict], *, reference_reward: float | None = None, ax=None):
    """True reward of samples against KL from the reference, one point per run of a sweep, with standard errors.

    ``points`` are :func:`course_lib.loop.sweep.train_sweep`'s dicts (``loss``, ``beta``, ``kl``, ``kl_stderr``,
    ``reward``, ``reward_stderr``); each loss is one line (:func:`course_lib.teaching.plots.plot_reward_kl_frontier`),
    in order of beta, each point labelled with its beta."""
    runs = []
    for loss in dict.fromkeys(p["loss"] for p in points):
        mine = sorted((p for p in points if p["loss"] == loss), key=lambda p: p["beta"])
        values = ", ".join(f"{p['beta']:g}" for p in mine)
        name = f"{loss.upper()} ({'tau' if loss == 'ipo' else 'beta'} = {values})"
        runs += [{**p, "method": name, "label": f"{p['beta']:g}"} for p in mine]
    ax = plot_reward_kl_frontier(runs, ax=ax, title="reward against KL, one point per run")
    if reference_reward is not None:
        ax.axhline(reference_reward, color="gray", ls=":", lw=1)
        ax.annotate(
            "reference", (0, reference_reward), textcoords="offset points", xytext=(4, 4), fontsize=8, color="gray"
        )
    return ax
