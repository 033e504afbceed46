"""Claims about figures that come out of a training run or a sampler, asserted as bounds that must hold on every
machine and for every seed: ``claim("DPO's margin keeps growing", late / early, above=1.4)``.

With ``$COURSE_CLAIMS_LOG`` set, every claim appends one JSON line to that file (statement, value, bounds, margin);
with ``$COURSE_CLAIMS_CALIBRATE=1`` too, a claim that fails is recorded and does not raise, so that one calibration
pass (``make calibrate``, which writes ``notebooks/CLAIMS.md``) sees every claim.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence

LOG_VARIABLE = "COURSE_CLAIMS_LOG"
CALIBRATE_VARIABLE = "COURSE_CLAIMS_CALIBRATE"

# The rule every claim of the chapter meets in notebooks/CLAIMS.md (tests/test_claims_calibrated.py).
Z_MIN = 4.0  # standard deviations between the figure's mean and its bound
MIN_DRAWS = 16  # seeds x roundings a claim is calibrated over
MAX_CLAIMS = 60  # claim() calls in the whole chapter: fewer, stronger claims


class ClaimError(AssertionError):
    """A claim of the chapter did not hold for this run."""


def claim_margin(value: float, *, above: float | None = None, below: float | None = None) -> float:
    """How far ``value`` lies inside ``(above, below)``: ``min(value - above, below - value)``; negative when the
    claim fails, ``inf`` when neither bound is given (which ``claim`` refuses)."""
    margins = ([value - above] if above is not None else []) + ([below - value] if below is not None else [])
    return min(margins, default=math.inf)


def _per_value(bound: float | Sequence[float], count: int, name: str) -> list[float]:
    """``bound`` as one float per figure: a number is repeated, a sequence must have one entry per figure."""
    if isinstance(bound, int | float):
        return [float(bound)] * count
    bounds = [float(b) for b in bound]
    if len(bounds) != count:
        raise ValueError(f"{name} must be a number or one bound per value: got {len(bounds)} for {count} values")
    return bounds


def claim_z(
    values: Sequence[float],
    *,
    above: float | Sequence[float] | None = None,
    below: float | Sequence[float] | None = None,
) -> float:
    """How many standard deviations a claim's figures keep from its bound, over several draws.

    For each bound, the distances ``d_i = value_i - above`` (or ``below - value_i``), and
    ``z = mean(d) / std(d)`` (sample standard deviation, n - 1); with both bounds, the smaller z. A bound
    that differs from draw to draw is given as one entry per value. Negative when the mean lies beyond
    the bound; ``inf`` when the figure does not move and keeps inside (``-inf`` when it does not move
    and fails); ``-inf`` when a figure is not finite.

    Args:
        values: the claim's figure in each draw, at least 2.
        above, below: the bounds, as ``claim`` takes them (a number, or one per value); at least one.
    """
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"values: need at least 2 figures for a standard deviation, got {len(values)}")
    if above is None and below is None:
        raise ValueError("give a bound, above= or below=")
    if not all(math.isfinite(v) for v in values):
        return -math.inf
    sides = []
    if above is not None:
        sides.append([v - a for v, a in zip(values, _per_value(above, len(values), "above"))])
    if below is not None:
        sides.append([b - v for v, b in zip(values, _per_value(below, len(values), "below"))])
    zs = []
    for distances in sides:
        mean, spread = statistics.fmean(distances), statistics.stdev(distances)
        zs.append(mean / spread if spread > 0 else (math.inf if mean > 0 else -math.inf))
    return min(zs)


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
        record = dict(statement=statement, value=number, above=above_f, below=below_f, margin=margin, held=held)
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    if not held and not (log and os.environ.get(CALIBRATE_VARIABLE) == "1"):
        bounds = [f"above {above_f:g}"] if above_f is not None else []
        bounds = " and ".join(bounds + ([f"below {below_f:g}"] if below_f is not None else []))
        raise ClaimError(f"claim failed: {statement}: the figure is {number:.6g}, expected {bounds}")
