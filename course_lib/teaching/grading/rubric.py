"""Exercise 18.3's rubric: the points of every part, in one place, and how the grader's findings score.

``PARTS`` is the rubric. The grader (``python -m course_lib.grade``) scores the parts marked ``auto`` from
what it checked in the learner's kernel (:mod:`.probe`); the others are graded by hand, from the learner's
answers. ``rubric_table()`` writes the table that ``notebooks/INSTRUCTORS.md`` shows between the markers
``<!-- rubric: begin -->`` and ``<!-- rubric: end -->`` (``tests/test_grade.py`` fails when it is stale;
``python -m course_lib.grade --write-rubric notebooks/INSTRUCTORS.md`` rewrites it).
"""

from __future__ import annotations

from dataclasses import dataclass

RUBRIC_BEGIN, RUBRIC_END = "<!-- rubric: begin -->", "<!-- rubric: end -->"
FIGURE_CODES = ("figure off", "figure missing")


@dataclass(frozen=True)
class Part:
    key: str  # the CSV column
    section: str
    points: int
    auto: bool  # scored by the grader; False: by hand
    full_marks: str
    bonus: bool = False


PARTS = (
    Part(
        "dpo_loss",
        "§1 `my_dpo_loss`",
        15,
        True,
        "`check_dpo_loss` passes. 10 when the formula is right and only the batch mean or the overflow is off.",
    ),
    Part(
        "ipo_loss",
        "§2 `my_ipo_loss`",
        15,
        True,
        "`check_ipo_loss` passes. 10 for `(beta*h - 0.5)**2` (same minimum, wrong scale).",
    ),
    Part(
        "dpo_run",
        "§3 DPO run",
        7,
        True,
        "4: a fresh copy of the reference, the learner's loss, summed log-probs, beta, steps, seed, held-out "
        "evaluations (`check_run`); 3: its figures within the expected ranges.",
    ),
    Part(
        "ipo_run",
        "§3 IPO run",
        8,
        True,
        "4: as for DPO, on averaged log-probs; 4: its figures within the expected ranges.",
    ),
    Part(
        "plot_answer",
        "§4 plot and answer",
        10,
        False,
        "names the two behaviours with numbers from their run: DPO's KL keeps rising while accuracy stalls; "
        "IPO's KL stays in a band well below DPO's.",
    ),
    Part(
        "dpo_sweep",
        "§5 DPO sweep",
        5,
        True,
        "3: a fresh policy per beta, each measured once after training (`check_sweep`); 2: figures as expected.",
    ),
    Part("ipo_sweep", "§5 IPO sweep", 5, True, "as for DPO."),
    Part(
        "sweep_answer",
        "§5 answer",
        10,
        False,
        "says how beta moves each loss and reads the trade-off from their points (neither loss wins outright).",
    ),
    Part(
        "questions",
        "§6 Q1-Q4",
        25,
        False,
        "Q1 (8): DPO's loss has no finite minimiser, its gradient never vanishes, deterministic labels make the "
        "optimum degenerate whatever beta is. Q2 (7): it depends on the accuracy: IPO reaches KLs no DPO run "
        "does, DPO accuracies IPO does not, and keeps paying KL on deterministic pairs. Q3 (7): DPO's beta "
        "scales the implicit reward / KL coefficient and does not bound the KL "
        "on deterministic pairs; IPO's beta sets Eq. 17's per-pair target 1/(2 beta) in the units of the log-probs "
        "fed (Eq. 11's optimal margins lie between -1/beta and 1/beta). Q4 (3): "
        "h = 0 at step 0 and the accuracy is strict.",
    ),
    Part("rrhf_loss", "bonus 7a `my_rrhf_loss`", 5, True, "`check_rrhf_loss` passes.", bonus=True),
    Part(
        "summed_run",
        "bonus 7b run",
        2,
        True,
        "IPO on summed log-probs, fresh policy, `SWEEP_STEPS` steps, figures as expected.",
        bonus=True,
    ),
    Part(
        "summed_answer",
        "bonus 7b answer",
        3,
        False,
        "the same beta means a target per token (averaged) or per response (summed); the summed run moves much "
        "less (lower KL and accuracy).",
        bonus=True,
    ),
)
AUTO_PARTS = tuple(p for p in PARTS if p.auto)
BY_KEY = {p.key: p for p in PARTS}

# Split of a run part: (points for the run's set-up, points for its figures)
RUN_SPLIT = {"dpo_run": (4, 3), "ipo_run": (4, 4), "dpo_sweep": (3, 2), "ipo_sweep": (3, 2), "summed_run": (1, 1)}
# A loss whose formula is right but whose reduction or overflow is off, or IPO's beta**2 scale: partial points
PARTIAL = {
    "dpo_loss": (
        10,
        (
            "the library's formula + mean",
            "the library's formula + overflow",
            "the library's formula + mean + overflow",
            "the library's formula + sum",
        ),
    ),
    "ipo_loss": (10, ("beta * h, target 1/2",)),
}


def max_points(*, bonus: bool = False, auto: bool | None = None) -> int:
    return sum(p.points for p in PARTS if p.bonus == bonus and (auto is None or p.auto == auto))


def score_loss(key: str, verdict: dict | None) -> int:
    """Points for a loss part from its checker verdict (``status``, ``mistake``, ``calls_library``)."""
    if not verdict or verdict.get("calls_library"):
        return 0
    if verdict.get("status") == "ok":
        return BY_KEY[key].points
    partial, mistakes = PARTIAL.get(key, (0, ()))
    return partial if verdict.get("mistake") in mistakes else 0


def score_run(key: str, run: dict | None) -> int:
    """Points for a run part from its problems (``[code, message]`` pairs): set-up, then figures."""
    if not run or not run.get("found"):
        return 0
    setup, figures = RUN_SPLIT[key]
    codes = [code for code, _ in run.get("problems", [])]
    if any(code not in FIGURE_CODES for code in codes):
        return 0
    return setup + (0 if codes else figures)


def score(findings: dict) -> dict[str, int]:
    """The points of every automatic part from the probe's findings (missing parts score 0)."""
    losses = findings.get("losses", {})
    runs = findings.get("runs", {})
    points = {}
    for part in AUTO_PARTS:
        if part.key.endswith("_loss"):
            points[part.key] = score_loss(part.key, losses.get(part.key.removesuffix("_loss")))
        else:
            points[part.key] = score_run(part.key, runs.get(part.key))
    return points


def rubric_table() -> str:
    """The rubric as a markdown table (what INSTRUCTORS.md shows between the markers)."""
    lines = [
        "| part | points | graded | full marks when |",
        "|---|---:|---|---|",
    ]
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
    _, tail = rest.split(RUBRIC_END, 1)
    return f"{head}{RUBRIC_BEGIN}\n{rubric_table()}\n{RUBRIC_END}{tail}"
