"""The expected figures of Exercise 18.3's runs, in one place: the settings and the bounds.

The solution notebook (``notebooks/solutions/18_3_exercise.ipynb``) asserts its model answers' claims
with these bounds, :func:`course_lib.teaching.exercises.check_run` checks a learner's run against them,
and the grader (``python -m course_lib.grade``) scores with them. Each bound is a dict for
``claim(statement, figure, **bounds)``: ``{"above": ..., "below": ...}``, either may be None.

The bounds are the solution notebook's claims as calibrated over seeds 0-7 (``make calibrate``,
``notebooks/CLAIMS.md``): they hold for every seed and on every machine, for a learner whose losses pass
the checkers and who trains as the solution does (lr 1e-3, batch 32, the settings below). A figure is
named by what it measures:

- ``accuracy_at_S`` / ``kl_at_S``: the held-out evaluation at step S (``"end"``: the last step);
- ``lowest_accuracy_from_100``: the lowest held-out accuracy over the evaluations from step 100 on;
- ``best_accuracy``: the highest held-out accuracy over all the evaluations;
- ``lowest_kl_from_100`` / ``highest_kl_from_100``: the lowest / highest held-out KL from step 100 on;
- ``kl_spread_from_100``: the largest ``|KL(step) - KL(end)|`` over the evaluations from step 100 on;
- ``margin_at_S``: the mean ``margin`` (h as the loss sees it) over the 20 steps up to S;
- ``margin_over_target_at_end``: the same at the end, divided by IPO's target 1/(2 beta);
- ``summed_margin_at_S``: the mean h on summed log-probs (``rewards/margins / beta``) over the 20 steps up to S.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunSettings:
    """The settings the bounds hold for: the solution notebook's ``BETA``, ``STEPS``, ``EVAL_EVERY``,
    ``EVAL_SAMPLES``, ``SWEEP_BETAS`` and ``SWEEP_STEPS`` (the notebook keeps its own names for them)."""

    beta: float = 0.5  # the two main runs (exercises 3 and 4)
    steps: int = 300
    eval_every: int = 50
    eval_samples: int = 128
    sweep_betas: tuple = (0.5, 2.0, 8.0)  # exercise 5
    sweep_steps: int = 150  # exercise 5; also the steps of bonus 7b


SETTINGS = RunSettings()
LENGTH_NORMALIZE = {"dpo": False, "ipo": True}  # the course's convention (summed for DPO, averaged for IPO)


def bounds(above: float | None = None, below: float | None = None) -> dict:
    """``{"above": above, "below": below}``, the keywords of :func:`course_lib.teaching.claims.claim`."""
    return {"above": above, "below": below}


#: §3-4, the main runs: SETTINGS.beta, SETTINGS.steps steps, evaluated every SETTINGS.eval_every. Figure -> bounds.
MAIN_RUN = {
    "dpo": {
        "accuracy_at_50": bounds(above=0.65),
        "kl_at_end": bounds(7, 20),
        "lowest_accuracy_from_100": bounds(above=0.83),
        "best_accuracy": bounds(above=0.88),
        "margin_at_150": bounds(5, 12),
        "margin_at_end": bounds(10, 17),
    },
    "ipo": {
        "accuracy_at_50": bounds(above=0.65),
        "kl_at_150": bounds(1.8, 4.0),
        "lowest_kl_from_100": bounds(above=1.5),
        "highest_kl_from_100": bounds(below=5.0),
        "accuracy_at_end": bounds(0.75, 0.88),
        "margin_over_target_at_end": bounds(0.6, 0.85),
        "summed_margin_at_150": bounds(4.5, 7),
    },
}

#: §5, the sweep: SETTINGS.sweep_steps steps per beta, measured once after training. (loss, beta) -> figure -> bounds.
SWEEP = {
    ("dpo", 0.5): {"kl": bounds(2.5, 14.0), "preference_accuracy": bounds(above=0.82)},
    ("dpo", 2.0): {"kl": bounds(1.2, 3.0), "preference_accuracy": bounds(above=0.82)},
    ("dpo", 8.0): {"kl": bounds(0.8, 2.2), "preference_accuracy": bounds(above=0.82)},
    ("ipo", 0.5): {"kl": bounds(1.8, 4.0), "preference_accuracy": bounds(0.76, 0.88)},
    ("ipo", 2.0): {"kl": bounds(0.45, 1.0), "preference_accuracy": bounds(0.76, 0.88)},
    ("ipo", 8.0): {"kl": bounds(0.08, 0.4)},
}

#: Bonus 7b: IPO at SETTINGS.beta on *summed* log-probs, SETTINGS.sweep_steps steps, evaluated at the start and end.
SUMMED_IPO_RUN = {
    "kl_at_end": bounds(0.15, 0.6),
    "accuracy_at_end": bounds(above=0.7),
    "summed_margin_at_end": bounds(0.5, 1.1),
}


def within(value: float, bound: dict) -> bool:
    """Whether ``above < value < below`` (a missing bound always holds), as ``claim`` asserts it."""
    above, below = bound.get("above"), bound.get("below")
    return (above is None or value > above) and (below is None or value < below)


def describe(bound: dict) -> str:
    """'between 2 and 4', 'above 0.75' or 'below 1'."""
    above, below = bound.get("above"), bound.get("below")
    if above is not None and below is not None:
        return f"between {above:g} and {below:g}"
    return f"above {above:g}" if above is not None else f"below {below:g}"
