"""Exercise 18.3's rubric: the points of every part, in one place, and how the grader's findings score.
``python -m course_lib.grade --write-rubric notebooks/INSTRUCTORS.md`` writes its table between the markers.
"""

from __future__ import annotations

from dataclasses import dataclass

RUBRIC_BEGIN, RUBRIC_END = "<!-- rubric: begin -->", "<!-- rubric: end -->"
FIGURE_CODES = ("figure off", "figure missing")
_RIGHT = "the library's formula"


@dataclass(frozen=True)
class Part:
    key: str  # the CSV column
    section: str
    points: int
    auto: bool  # scored by the grader; False: by hand
    full_marks: str
    bonus: bool = False
    split: tuple = ()  # a run part: (points for its set-up, points for its figures)
    partial: tuple = ()  # a loss part: (points, the checker's mistake labels that earn them)


PARTS = (
    Part(
        "dpo_loss", "§1 `my_dpo_loss`", 15, True,
        "`check_dpo_loss` passes. 10 when the formula is right and only the batch mean or the overflow is off.",
        partial=(10, (f"{_RIGHT} + mean", f"{_RIGHT} + overflow", f"{_RIGHT} + mean + overflow", f"{_RIGHT} + sum")),
    ),
    Part(
        "ipo_loss", "§2 `my_ipo_loss`", 15, True,
        "`check_ipo_loss` passes. 10 for `(beta*h - 0.5)**2` (same minimum, wrong scale).",
        partial=(10, ("beta * h, target 1/2",)),
    ),
    Part(
        "dpo_run", "§3 DPO run", 7, True,
        "4: a fresh copy of the reference, the learner's loss, summed log-probs, beta, steps, seed, held-out "
        "evaluations (`check_run`); 3: its figures within the expected ranges.",
        split=(4, 3),
    ),
    Part(
        "ipo_run", "§3 IPO run", 8, True,
        "4: as for DPO, on averaged log-probs; 4: its figures within the expected ranges.",
        split=(4, 4),
    ),
    Part(
        "plot_answer", "§4 plot and answer", 10, False,
        "names the two behaviours with numbers from their run: DPO's KL keeps rising while accuracy stalls; "
        "IPO's KL stays in a band well below DPO's.",
    ),
    Part(
        "dpo_sweep", "§5 DPO sweep", 5, True,
        "3: a fresh policy per beta, each measured once after training (`check_sweep`); 2: figures as expected.",
        split=(3, 2),
    ),
    Part("ipo_sweep", "§5 IPO sweep", 5, True, "as for DPO.", split=(3, 2)),
    Part(
        "sweep_answer", "§5 answer", 10, False,
        "says how beta moves each loss and reads the trade-off from their points (neither loss wins outright).",
    ),
    Part(
        "questions", "§6 Q1-Q4", 25, False,
        "Q1 (8): DPO's loss has no finite minimiser, its gradient never vanishes, deterministic labels make the "
        "optimum degenerate whatever beta is. Q2 (7): it depends on the accuracy: IPO reaches KLs no DPO run "
        "does, DPO accuracies IPO does not, and keeps paying KL on deterministic pairs. Q3 (7): DPO's beta "
        "scales the implicit reward / KL coefficient and does not bound the KL on deterministic pairs; IPO's "
        "beta sets Eq. 17's per-pair target 1/(2 beta) in the units of the log-probs fed (Eq. 11's optimal "
        "margins lie between -1/beta and 1/beta). Q4 (3): h = 0 at step 0 and the accuracy is strict.",
    ),
    Part("rrhf_loss", "bonus 7a `my_rrhf_loss`", 5, True, "`check_rrhf_loss` passes.", bonus=True),
    Part(
        "summed_run", "bonus 7b run", 2, True,
        "IPO on summed log-probs, fresh policy, `SWEEP_STEPS` steps, figures as expected.",
        bonus=True, split=(1, 1),
    ),
    Part(
        "summed_answer", "bonus 7b answer", 3, False,
        "the same beta means a target per token (averaged) or per response (summed); the summed run moves much "
        "less (lower KL and accuracy).",
        bonus=True,
    ),
)  # fmt: skip
AUTO_PARTS = tuple(p for p in PARTS if p.auto)
BY_KEY = {p.key: p for p in PARTS}


def max_points(*, bonus: bool = False, auto: bool | None = None) -> int:
    return sum(p.points for p in PARTS if p.bonus == bonus and (auto is None or p.auto == auto))


def score(findings: dict) -> dict[str, int]:
    """The points of every automatic part from the probe's findings (missing parts score 0).

    A loss part: full points when its checker passes, ``partial`` for the listed mistakes. A run part: its
    set-up points when no slip other than a figure was found, and its figure points when nothing was."""
    points = {}
    for part in AUTO_PARTS:
        if part.key.endswith("_loss"):
            verdict = findings.get("losses", {}).get(part.key.removesuffix("_loss")) or {}
            partial, mistakes = part.partial or (0, ())
            ok = verdict.get("status") == "ok"
            points[part.key] = part.points if ok else (partial if verdict.get("mistake") in mistakes else 0)
        else:
            run = findings.get("runs", {}).get(part.key) or {}
            codes = [code for code, _ in run.get("problems", [])]
            setup = run.get("found") and all(code in FIGURE_CODES for code in codes)
            points[part.key] = (part.split[0] + (0 if codes else part.split[1])) if setup else 0
    return points


def rubric_table() -> str:
    """The rubric as a markdown table (what INSTRUCTORS.md shows between the markers)."""
    lines = ["| part | points | graded | full marks when |", "|---|---:|---|---|"]
    for p in PARTS:
        points = f"+{p.points}" if p.bonus else str(p.points)
        lines.append(f"| {p.section} | {points} | {'grader' if p.auto else 'by hand'} | {p.full_marks} |")
    lines.append(
        f"| **total** | **{max_points()}** (+{max_points(bonus=True)} bonus) | | grader: {max_points(auto=True)} "
        f"(+{max_points(bonus=True, auto=True)}); by hand: {max_points(auto=False)} "
        f"(+{max_points(bonus=True, auto=False)}) |"
    )
    return "\n".join(lines)


def replace_rubric(text: str) -> str:
    """``text`` with the table between the rubric markers replaced by :func:`rubric_table`."""
    if RUBRIC_BEGIN not in text or RUBRIC_END not in text:
        raise ValueError(f"no {RUBRIC_BEGIN} ... {RUBRIC_END} markers in the text")
    head, rest = text.split(RUBRIC_BEGIN, 1)
    return f"{head}{RUBRIC_BEGIN}\n{rubric_table()}\n{RUBRIC_END}{rest.split(RUBRIC_END, 1)[1]}"
