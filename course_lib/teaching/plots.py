"""Plots of training runs: metrics over steps, reward against KL, and the reward-KL frontier of a sweep. A curve's x
is the number of updates done when the value was measured (a step's batch values before its update, step s at s - 1;
evaluations after it), so curves start at 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..maths.losses import PAIRWISE_LOSSES


def run_label(run: dict) -> str:
    """e.g. "ipo (beta=0.5)" or "rrhf"."""
    return run["loss"] if run.get("beta") is None else f"{run['loss']} (beta={run['beta']:g})"


def _finish(ax, xlabel: str, ylabel: str):
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return ax


def plot_over_steps(runs: list[dict], key: str, *, ax=None, ylabel: str | None = None, target_lines=None):
    """``history[key]`` of each run that logs it, against updates done (from 0); ``target_lines``: {label: y}."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    for run in runs:
        records = [e for e in run["history"] if key in e]
        if records:
            ax.plot([e["step"] - 1 for e in records], [e[key] for e in records], label=run_label(run))
    for i, (label, value) in enumerate((target_lines or {}).items()):
        ax.axhline(value, ls=(0, (4, 2 + i)), lw=1, color="0.4", label=label)
    return _finish(ax, "updates done", ylabel or key)


def plot_eval_over_steps(runs: list[dict], key: str, *, ax=None, ylabel: str | None = None):
    """A held-out metric (``evals[i][key]``, with ``key_stderr`` as error bars if present) against updates done."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    for run in runs:
        points = [e for e in run.get("evals", []) if e.get(key) is not None]
        if points:
            x, y = [e["step"] for e in points], [e[key] for e in points]
            errors = [e.get(f"{key}_stderr") or 0.0 for e in points]
            ax.errorbar(x, y, yerr=errors, marker="o", ms=3, capsize=2, label=run_label(run))
    return _finish(ax, "updates done", ylabel or key)


def plot_reward_vs_kl(runs: list[dict], *, ax=None):
    """True reward of samples against KL from the reference, one point per evaluation, joined in step order."""
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    for run in runs:
        points = [e for e in run.get("evals", []) if e.get("kl") is not None and e.get("reward") is not None]
        if points:
            line = ax.plot([e["kl"] for e in points], [e["reward"] for e in points], marker="o", ms=3)[0]
            line.set_label(f"{run_label(run)}, step {points[0]['step']} to {points[-1]['step']}")
    return _finish(ax, "KL(policy || reference), nats", "true reward of samples")


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both counts (lower KL and higher reward), in order of KL."""
    front = []
    for p in sorted(points, key=lambda p: (p["kl"], -p["reward"])):
        if not front or p["reward"] > front[-1]["reward"]:
            front.append(p)
    return front


def plot_reward_kl_frontier(points: list[dict], *, ax=None, title=None, log_kl=False, reference_reward=None):
    """True reward against KL(policy || reference): one marker per run (``points``: dicts with ``method``, ``label``,
    ``kl``, ``kl_stderr``, ``reward``, ``reward_stderr``), and per method a line through its Pareto front, never a
    line through runs in the order of a knob. ``log_kl``: a log KL axis with plain tick labels; returns the axes."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for i, method in enumerate(dict.fromkeys(p["method"] for p in points)):
        runs = [p for p in points if p["method"] == method]
        kl, reward = [p["kl"] for p in runs], [p["reward"] for p in runs]
        xerr, yerr = [p["kl_stderr"] for p in runs], [p["reward_stderr"] for p in runs]
        ax.errorbar(
            kl, reward, xerr=xerr, yerr=yerr, ls="none", marker="o", ms=5, capsize=2, color=f"C{i}", label=method
        )
        front = pareto_front(runs)
        ax.plot([p["kl"] for p in front], [p["reward"] for p in front], color=f"C{i}", lw=1, alpha=0.6)
        for p in runs:
            if p.get("label"):
                ax.annotate(p["label"], (p["kl"], p["reward"]), textcoords="offset points", xytext=(4, -9), fontsize=7)
    ax.plot([], [], color="0.4", lw=1, label="line: a method's runs no other of its runs beats on both")
    if reference_reward is not None:
        ax.axhline(reference_reward, color="0.5", ls=":", lw=1, label="reference")
    if log_kl:  # plain tick labels at 1, 2 and 5 times each power of ten (0.5, 1, 2, 5, 10 ...)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if title:
        ax.set_title(title)
    return _finish(ax, "KL(policy || reference), nats", "true reward of samples")


def _margin_targets(runs: list[dict]) -> dict:
    """Where each run's loss stops pushing its margin up (none for a loss that never stops), by label."""
    from .widgets.margin_loss import push_stops_at

    targets = {}
    for run in runs:
        spec = PAIRWISE_LOSSES.get(run["loss"])
        stop = spec and push_stops_at(spec, beta=run["beta"], h_range=(-100.0, 100.0))
        if stop is not None:
            targets[f"{run_label(run)} stops pushing at h = {stop:.3g}"] = stop
    return targets


def plot_comparison(results: dict, out: Path) -> list[str]:
    """Write margin_and_kl.png (margins in the units each loss sees, a panel per unit) and reward_vs_kl.png for
    ``compare``; returns the file names."""
    runs = results["runs"]
    by_units = {}
    for run in runs:
        if run["history"] and "margin" in run["history"][0]:
            spec = PAIRWISE_LOSSES.get(run["loss"])
            by_units.setdefault("averaged" if spec and spec.average_logps else "summed", []).append(run)
    fig, axes = plt.subplots(1, len(by_units) + 1, figsize=(5 * (len(by_units) + 1), 3.5), squeeze=False)
    for ax, (units, group) in zip(axes[0], sorted(by_units.items())):
        plot_over_steps(
            group, "margin", ax=ax, ylabel=f"mean margin h, {units} log-probs", target_lines=_margin_targets(group)
        )
    plot_eval_over_steps(runs, "kl", ax=axes[0][-1], ylabel="KL from reference (nats)")
    reward_fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_reward_vs_kl(runs, ax=ax)
    names = ["margin_and_kl.png", "reward_vs_kl.png"]
    for figure, name in zip((fig, reward_fig), names):
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
    return names
