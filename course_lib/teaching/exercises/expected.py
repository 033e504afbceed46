"""The expected figures of Exercise 18.3's runs, in one place: the settings and the bounds, which hold for every
seed and machine (calibrated over ``COURSE_SEED`` 0-7) for a learner whose losses pass the checkers and who trains
as the solution does. ``check_run``, ``check_sweep``, the grader and the solution notebook read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RunSettings:
    """The settings the bounds hold for: the solution notebook's ``BETA``, ``STEPS``, ``EVAL_EVERY``, ...."""

    beta: float = 0.5  # the two main runs (exercises 3 and 4)
    steps: int = 300
    eval_every: int = 50
    eval_samples: int = 128
    sweep_betas: tuple = (0.5, 2.0, 8.0)  # exercise 5
    sweep_steps: int = 150  # exercise 5; also the steps of bonus 7b


SETTINGS = RunSettings()


def evaluation(history, step: int | str, key: str) -> float | None:
    """``key`` of the held-out evaluation at ``step`` (``"end"``: the last one), or None."""
    evals = {e["step"]: e for e in history.evals if "step" in e}
    entry = evals.get(max(evals, default=None) if step == "end" else step, {})
    return None if key not in entry else float(entry[key])


def from_100(history, key: str, pick: Callable) -> float | None:
    """``pick`` (min or max) of ``key`` over the held-out evaluations from step 100 on, or None."""
    values = [e[key] for e in history.evals if e.get("step", 0) >= 100 and key in e]
    return pick(values) if values else None


def mean_margin(history, step: int | str, *, summed: bool = False, window: int = 20) -> float | None:
    """The mean h over the ``window`` steps up to ``step``: as the loss sees it, or on summed log-probs
    (``rewards/margins / beta``, which TRL's metrics always compute on summed log-probs)."""
    step = len(history) if step == "end" else step
    column = "rewards/margins" if summed else "margin"
    values = [e[column] for e in history[max(0, step - window) : step] if column in e]
    return None if not values else sum(values) / len(values) / (history.beta if summed else 1.0)


@dataclass(frozen=True)
class Figure:
    """One figure of a run: what it is (``words``), how to read it off a History, and its bounds."""

    words: str
    measure: Callable
    above: float | None = None
    below: float | None = None

    def holds(self, value: float) -> bool:
        """Whether ``above < value < below`` (a missing bound always holds), as ``claim`` asserts it."""
        return (self.above is None or value > self.above) and (self.below is None or value < self.below)

    def describe(self) -> str:
        """'between 2 and 4', 'above 0.75' or 'below 1'."""
        if self.above is not None and self.below is not None:
            return f"between {self.above:g} and {self.below:g}"
        return f"above {self.above:g}" if self.above is not None else f"below {self.below:g}"


_ACCURACY_50 = Figure("held-out accuracy at step 50", lambda h: evaluation(h, 50, "preference_accuracy"), 0.65)

#: §3-4, the main runs (SETTINGS.beta, SETTINGS.steps steps, evaluated every SETTINGS.eval_every).
MAIN_RUN = {
    "dpo": (
        _ACCURACY_50,
        Figure("held-out KL at the end", lambda h: evaluation(h, "end", "kl"), 7, 20),
        Figure("lowest held-out accuracy from step 100 on", lambda h: from_100(h, "preference_accuracy", min), 0.83),
        Figure("best held-out accuracy", lambda h: max(e["preference_accuracy"] for e in h.evals), 0.88),
        Figure("mean margin h (20 steps) at step 150", lambda h: mean_margin(h, 150), 5, 12),
        Figure("mean margin h (20 steps) at the end", lambda h: mean_margin(h, "end"), 10, 17),
    ),
    "ipo": (
        _ACCURACY_50,
        Figure("held-out KL at step 150", lambda h: evaluation(h, 150, "kl"), 1.8, 4.0),
        Figure("lowest held-out KL from step 100 on", lambda h: from_100(h, "kl", min), 1.5),
        Figure("highest held-out KL from step 100 on", lambda h: from_100(h, "kl", max), below=5.0),
        Figure("held-out accuracy at the end", lambda h: evaluation(h, "end", "preference_accuracy"), 0.75, 0.88),
        Figure(
            "mean margin at the end over IPO's target 1/(2 beta)",
            lambda h: mean_margin(h, "end") * 2 * h.beta,
            0.6,
            0.85,
        ),
        Figure("mean summed margin h (20 steps) at step 150", lambda h: mean_margin(h, 150, summed=True), 4.5, 7),
    ),
}

#: Bonus 7b: IPO at SETTINGS.beta on *summed* log-probs, SETTINGS.sweep_steps steps, evaluated at the start and end.
SUMMED_RUN = {
    "ipo": (
        Figure("held-out KL at the end", lambda h: evaluation(h, "end", "kl"), 0.15, 0.6),
        Figure("held-out accuracy at the end", lambda h: evaluation(h, "end", "preference_accuracy"), 0.7),
        Figure("mean summed margin h (20 steps) at the end", lambda h: mean_margin(h, "end", summed=True), 0.5, 1.1),
    )
}


#: §5, the sweep: SETTINGS.sweep_steps steps per beta, measured once after training. (loss, beta) -> figures,
#: each read off the sweep's point (a dict with "preference_accuracy" and "kl").
_kl = lambda above, below: Figure("held-out KL", lambda point: point["kl"], above, below)
_accuracy = lambda above, below=None: Figure("held-out accuracy", lambda p: p["preference_accuracy"], above, below)
SWEEP_RUNS = {
    ("dpo", 0.5): (_kl(2.5, 14.0), _accuracy(0.82)),
    ("dpo", 2.0): (_kl(1.2, 3.0), _accuracy(0.82)),
    ("dpo", 8.0): (_kl(0.8, 2.2), _accuracy(0.82)),
    ("ipo", 0.5): (_kl(1.8, 4.0), _accuracy(0.76, 0.88)),
    ("ipo", 2.0): (_kl(0.45, 1.0), _accuracy(0.76, 0.88)),
    ("ipo", 8.0): (_kl(0.08, 0.4),),
}
