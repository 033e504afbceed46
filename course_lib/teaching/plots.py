"""Plots of training runs: margins, KL and reward over steps, and reward against KL (per evaluation, or one
point per run of a sweep: the frontier).

Plotting only: every number comes from a training history or an evaluation dict.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter


def _legend(ax) -> None:
    """A legend only when something is labelled (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def run_label(run: dict) -> str:
    """e.g. "ipo (beta=0.5)" or "rrhf"."""
    return run["loss"] if run.get("beta") is None else f"{run['loss']} (beta={run['beta']:g})"


def plot_over_steps(
    runs: list[dict], key: str, *, ax=None, ylabel: str | None = None, target_lines: dict | None = None
):
    """Plot ``history[key]`` over steps for each run that logs it; returns the axes."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    for run in runs:
        if run["history"] and key in run["history"][0]:
            ax.plot([e["step"] for e in run["history"]], [e[key] for e in run["history"]], label=run_label(run))
    for label, value in (target_lines or {}).items():
        ax.axhline(value, ls="--", lw=1, color="gray")
        ax.annotate(label, (0, value), textcoords="offset points", xytext=(4, 4), fontsize=8, color="gray")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or key)
    _legend(ax)
    return ax


def plot_eval_over_steps(runs: list[dict], key: str, *, ax=None, ylabel: str | None = None):
    """Plot a held-out metric (``evals[i][key]``, with ``key_stderr`` as error bars if present)."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    for run in runs:
        points = [e for e in run.get("evals", []) if e.get(key) is not None]
        if points:
            errors = [e.get(f"{key}_stderr") or 0.0 for e in points]
            ax.errorbar(
                [e["step"] for e in points],
                [e[key] for e in points],
                yerr=errors,
                marker="o",
                ms=3,
                capsize=2,
                label=run_label(run),
            )
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or key)
    _legend(ax)
    return ax


def plot_reward_vs_kl(runs: list[dict], *, ax=None):
    """The DPO paper's view: true reward of samples against KL from the reference, one point per eval."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    for run in runs:
        points = [e for e in run.get("evals", []) if e.get("kl") is not None and e.get("reward") is not None]
        if points:
            ax.plot([e["kl"] for e in points], [e["reward"] for e in points], marker="o", ms=3, label=run_label(run))
    ax.set_xlabel("KL(policy || reference), nats")
    ax.set_ylabel("true reward of samples")
    _legend(ax)
    return ax


def plot_reward_kl_frontier(points: list[dict], *, ax=None, title: str | None = None, log_kl: bool = False):
    """True reward against KL(policy || reference), one marker per run, error bars = standard errors.

    Args:
        points: dicts with ``method`` (runs of one method share a colour and a line), ``label`` (the
            setting, written beside the point), ``kl``, ``kl_stderr``, ``reward``, ``reward_stderr``.
            Within a method the points are joined in the order given.
        log_kl: a log scale for the KL, with plain tick labels (0.5, 1, 2, ...).
    Returns:
        the axes.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    methods = list(dict.fromkeys(p["method"] for p in points))
    for colour, method in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3, methods):
        runs = [p for p in points if p["method"] == method]
        ax.errorbar(
            [p["kl"] for p in runs],
            [p["reward"] for p in runs],
            xerr=[p["kl_stderr"] for p in runs],
            yerr=[p["reward_stderr"] for p in runs],
            marker="o",
            ms=4,
            capsize=2,
            lw=1,
            color=colour,
            label=method,
        )
        for p in runs:
            if p.get("label"):
                ax.annotate(p["label"], (p["kl"], p["reward"]), textcoords="offset points", xytext=(4, -9), fontsize=7)
    ax.set(xlabel="KL(policy || reference), nats", ylabel="true reward of samples")
    if log_kl:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_comparison(results: dict, out: Path) -> list[str]:
    """Write margin_and_kl.png and reward_vs_kl.png for ``compare``; returns the file names."""
    runs = results["runs"]
    fig, (ax_margin, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.5))
    targets = {
        f"IPO target 1/(2 beta) = {1 / (2 * r['beta']):g}": 1 / (2 * r["beta"]) for r in runs if r["loss"] == "ipo"
    }
    plot_over_steps(
        [r for r in runs if r["loss"] != "rrhf"],
        "margin",
        ax=ax_margin,
        ylabel="mean margin h (as the loss sees it)",
        target_lines=targets,
    )
    plot_eval_over_steps(runs, "kl", ax=ax_kl, ylabel="KL from reference (nats)")
    fig.tight_layout()
    fig.savefig(out / "margin_and_kl.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_reward_vs_kl(runs, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "reward_vs_kl.png", dpi=100)
    plt.close(fig)
    return ["margin_and_kl.png", "reward_vs_kl.png"]
