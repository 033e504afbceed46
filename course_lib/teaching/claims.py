"""Claims about figures that come out of a training run or a sampler: asserted with a tolerance.

A number a run produces depends on the machine's floating-point rounding (CPU model, thread count, GPU)
and on the seed (``COURSE_SEED``), so the notebooks never compare it digit for digit. They state the claim
it supports as a bound, ``claim("DPO's margin keeps growing", late / early, above=1.4)``, which holds on
every machine and for every seed, with a tolerance calibrated by ``scripts/calibrate_claims.py`` over
several seeds (the smallest margin each claim held by is written to ``notebooks/CLAIMS.md``).

With ``$COURSE_CLAIMS_LOG`` set, every claim appends one JSON line to that file (statement, value, bounds,
margin); with ``$COURSE_CLAIMS_CALIBRATE=1`` too, a claim that fails is recorded and does not raise, so
that one calibration pass sees every claim.
"""

from __future__ import annotations

import json
import math
import os

LOG_VARIABLE = "COURSE_CLAIMS_LOG"
CALIBRATE_VARIABLE = "COURSE_CLAIMS_CALIBRATE"


class ClaimError(AssertionError):
    """A claim of the chapter did not hold for this run."""


def claim_margin(value: float, *, above: float | None = None, below: float | None = None) -> float:
    """How far ``value`` lies inside ``(above, below)``: ``min(value - above, below - value)``.

    Negative when the claim fails; ``inf`` when neither bound is given (which ``claim`` refuses).
    """
    margins = []
    if above is not None:
        margins.append(value - above)
    if below is not None:
        margins.append(below - value)
    return min(margins) if margins else math.inf


def claim(statement: str, value, *, above: float | None = None, below: float | None = None) -> None:
    """Asserts ``above < value < below`` (either bound may be left out).

    Returns None, so that a notebook cell ending in a claim displays nothing (a displayed figure would be
    compared digit for digit by nbval).

    Args:
        statement: the claim in words, as the notebook's prose makes it; it names the claim in the log
            and in the error.
        value: the figure, a number or a one-element tensor.
        above, below: the bounds; at least one.

    Raises:
        ClaimError: the figure is outside its bounds (or not finite), with the statement, the figure and
            the bound in the message.
    """
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError("statement must be a non-empty string naming the claim")
    if above is None and below is None:
        raise ValueError(f"claim {statement!r}: give a bound, above= or below=")
    for name, bound in (("above", above), ("below", below)):
        if bound is not None and not math.isfinite(float(bound)):
            raise ValueError(f"claim {statement!r}: {name} must be a finite number, got {bound!r}")
    number = float(value.item() if hasattr(value, "item") else value)
    above_f = None if above is None else float(above)
    below_f = None if below is None else float(below)
    margin = claim_margin(number, above=above_f, below=below_f) if math.isfinite(number) else -math.inf
    held = margin > 0
    log = os.environ.get(LOG_VARIABLE)
    if log:
        record = {
            "statement": statement,
            "value": number,
            "above": above_f,
            "below": below_f,
            "margin": margin,
            "held": held,
        }
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    if not held and not (log and os.environ.get(CALIBRATE_VARIABLE) == "1"):
        bounds = " and ".join(
            text
            for text in (
                f"above {above_f:g}" if above_f is not None else "",
                f"below {below_f:g}" if below_f is not None else "",
            )
            if text
        )
        raise ClaimError(f"claim failed: {statement}: the figure is {number:.6g}, expected {bounds}")
