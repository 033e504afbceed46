"""The batch grader, ``python -m course_lib.grade``, on a small generated class.

The class (7 notebooks) is made from the solution notebook with its solution-only cells left out: a
learner who did everything, then variants with broken losses, the usual slips in §3-5, a notebook that hangs,
one that raises at import, one that is not JSON, and one that writes outside its folder and deletes its own
file. It is graded once, with ``--quick`` (4-step runs: the runs'
set-up is checked, not their figures, which need the full runs) and a short ``--timeout``, two at a time;
each row's status and points are checked, and that the batch finished.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_lib.teaching.grading.rubric import AUTO_PARTS, PARTS, RUBRIC_BEGIN, RUBRIC_END, replace_rubric, rubric_table

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "notebooks" / "solutions" / "18_3_exercise.ipynb"
INSTRUCTORS = ROOT / "notebooks" / "INSTRUCTORS.md"
TIMEOUT = 180  # seconds per notebook: a correct --quick notebook takes 15-30 s on an idle 2-core machine


def learner_notebook(replacements: dict[str, str] | None = None, extra_cells: list[tuple[str, str]] = ()):
    """The solution as a learner who did everything would submit it, with ``old -> new`` text replacements
    in the code cells and ``(text of the cell it follows, source)`` cells added."""
    nb = nbformat.read(SOLUTION, as_version=4)
    cells = []
    for cell in nb.cells:
        if "solution-only" in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "code":
            lines = [
                line
                for line in cell.source.splitlines()
                if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")
            ]
            cell.source = "\n".join(lines)
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    for old, new in (replacements or {}).items():
        hits = [c for c in cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1, f"{old!r} is in {len(hits)} cells"
        hits[0].source = hits[0].source.replace(old, new)
    for after, source in extra_cells:
        index = next(i for i, c in enumerate(cells) if c.cell_type == "code" and after in c.source)
        cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    nb.cells = cells
    return nb


DPO_RIGHT = "return -F.logsigmoid(beta * h)  # (B,)"
IPO_RIGHT = "return (h - 1 / (2 * beta)) ** 2  # (B,)"

ESCAPES = (
    "import glob\nimport os\n\nopen('../escaped.txt', 'w').write('x')\nfor f in glob.glob('*.ipynb'):\n    os.remove(f)"
)

CLASS = {
    "correct": learner_notebook(),
    "broken_losses": learner_notebook(
        {
            DPO_RIGHT: "return (-F.logsigmoid(beta * h)).mean()",  # right formula, batch mean: partial points
            IPO_RIGHT: "return torch.relu(1 / (2 * beta) - h) ** 2",  # one-sided
        }
    ),
    "slips": learner_notebook(
        {
            "steps=steps, length_normalize=length_normalize,": "steps=steps,",  # IPO on summed log-probs
            "    results = []\n    for beta in betas:\n        policy = copy.deepcopy(reference)": (
                "    results = []\n    policy = copy.deepcopy(reference)\n    for beta in betas:"
            ),  # one policy reused across the sweep
        }
    ),
    "hangs": learner_notebook(extra_cells=[("ipo_ok = check_ipo_loss", "import time\n\ntime.sleep(3600)")]),
    "raises_at_import": learner_notebook({"import copy\n": "import copy\nimport course_lib_does_not_exist\n"}),
    "escapes": learner_notebook(extra_cells=[("course_seed()", ESCAPES)]),
}
EXPECTED = {  # submission -> (status, points of the automatic parts)
    "correct": (
        "ok",
        {
            "dpo_loss": 15,
            "ipo_loss": 15,
            "dpo_run": 7,
            "ipo_run": 8,
            "dpo_sweep": 5,
            "ipo_sweep": 5,
            "rrhf_loss": 5,
            "summed_run": 2,
        },
    ),
    "broken_losses": (
        "ok",
        {
            "dpo_loss": 10,
            "ipo_loss": 0,
            "dpo_run": 0,
            "ipo_run": 0,
            "dpo_sweep": 0,
            "ipo_sweep": 0,
            "rrhf_loss": 5,
            "summed_run": 0,
        },
    ),
    "slips": (
        "ok",
        {
            "dpo_loss": 15,
            "ipo_loss": 15,
            "dpo_run": 7,
            "ipo_run": 0,
            "dpo_sweep": 0,
            "ipo_sweep": 0,
            "rrhf_loss": 5,
            "summed_run": 2,
        },
    ),
    "hangs": (
        "timeout",
        {
            "dpo_loss": 15,
            "ipo_loss": 15,
            "dpo_run": 0,
            "ipo_run": 0,
            "dpo_sweep": 0,
            "ipo_sweep": 0,
            "rrhf_loss": 0,
            "summed_run": 0,
        },
    ),
    # the import fails, so torch and F are not defined: only my_ipo_loss, plain arithmetic, still works
    "raises_at_import": ("error", {**{p.key: 0 for p in AUTO_PARTS}, "ipo_loss": 15}),
    "not_json": ("invalid", {p.key: 0 for p in AUTO_PARTS}),
    "escapes": (
        "ok",
        {
            "dpo_loss": 15,
            "ipo_loss": 15,
            "dpo_run": 7,
            "ipo_run": 8,
            "dpo_sweep": 5,
            "ipo_sweep": 5,
            "rrhf_loss": 5,
            "summed_run": 2,
        },
    ),
}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for name, nb in CLASS.items():
        nbformat.write(nb, folder / f"{name}.ipynb")
    (folder / "not_json.ipynb").write_text('{"cells": [ this is not JSON')
    before = _digest(folder)
    out = tmp_path_factory.mktemp("grades")
    start = time.monotonic()
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "course_lib.grade",
            *sorted(str(p) for p in folder.glob("*.ipynb")),
            "--out",
            str(out),
            "--quick",
            "--timeout",
            str(TIMEOUT),
            "--jobs",
            "2",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    seconds = time.monotonic() - start
    with open(out / "grades.csv", newline="") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    return {"process": process, "rows": rows, "out": out, "folder": folder, "before": before, "seconds": seconds}


def test_the_batch_finishes_with_one_row_per_submission(graded):
    process = graded["process"]
    assert process.returncode == 0, process.stderr[-3000:]
    assert set(graded["rows"]) == set(EXPECTED)
    print(f"graded {len(EXPECTED)} notebooks in {graded['seconds']:.0f} s")  # shown with -s


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_row_has_its_status_and_points(graded, name):
    row = graded["rows"][name]
    status, points = EXPECTED[name]
    feedback = (graded["out"] / "feedback" / f"{name}.md").read_text()
    assert row["status"] == status, feedback
    assert {key: int(row[key]) for key in points} == points, feedback
    assert int(row["total"]) == sum(points.values())


def test_the_feedback_says_what_to_fix_in_the_checkers_words(graded):
    out = graded["out"] / "feedback"
    broken = " ".join((out / "broken_losses.md").read_text().split())
    assert "one number for the whole batch (its mean)" in broken and "one-sided" in broken
    slips = " ".join((out / "slips.md").read_text().split())
    assert "summed log-probs to the loss" in slips and "did not start as a copy of the reference" in slips


def test_flags_for_the_instructor(graded):
    rows = graded["rows"]
    flags = rows["escapes"]["flags"]
    assert "wrote outside its folder: escaped.txt" in flags and "deleted its own notebook file" in flags
    assert not rows["correct"]["flags"]


def test_no_submission_touches_another_or_the_course(graded):
    assert _digest(graded["folder"]) == graded["before"]
    assert not (graded["folder"].parent / "escaped.txt").exists()
    assert not (ROOT / "escaped.txt").exists() and not (ROOT / "notebooks" / "escaped.txt").exists()


def test_the_summary_gives_the_distribution_and_the_common_mistakes(graded):
    summary = graded["process"].stdout
    assert "Graded 7 submissions" in summary and "4 ok, 1 timeout, 1 error, 1 invalid" in summary
    assert "Automatic points (of 55, +7 bonus)" in summary
    assert "Most common mistakes:" in summary and "my_ipo_loss: one-sided" in summary
    assert (graded["out"] / "summary.txt").read_text().strip() == summary.split("\n\nwritten:")[0].strip()
    results = json.loads((graded["out"] / "results.json").read_text())
    assert results["hangs"]["status"] == "timeout"


# ----------------------------------------------------------------------------- wrong use: exit 2, one line
def _grade(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "course_lib.grade", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "make_args, option",
    [
        (lambda tmp: ["--out", str(tmp / "o")], "SUBMISSION.ipynb: no submissions"),
        (lambda tmp: [str(tmp), "--out", str(tmp / "o")], "is a folder"),
        (lambda tmp: [str(tmp / "missing.ipynb"), "--out", str(tmp / "o")], "does not exist"),
        (lambda tmp: [str(tmp / "a.ipynb"), "--out", str(tmp / "a.ipynb" / "o")], "--out:"),
        (lambda tmp: [str(tmp / "a.ipynb")], "--out:"),
        (lambda tmp: [str(tmp / "a.ipynb"), "--out", str(tmp / "o"), "--jobs", "0"], "--jobs"),
        (lambda tmp: [str(tmp / "a.ipynb"), "--out", str(tmp / "o"), "--timeout", "0"], "--timeout"),
    ],
    ids=["no submissions", "a folder", "missing", "unwritable out", "no out", "jobs 0", "timeout 0"],
)
def test_wrong_use_is_one_line_and_exit_2(tmp_path, make_args, option):
    (tmp_path / "a.ipynb").write_text("{}")
    process = _grade(*make_args(tmp_path))
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], process.stderr


# ----------------------------------------------------------------------------- the rubric, in one place
def test_the_rubric_table_in_instructors_md_is_up_to_date():
    text = INSTRUCTORS.read_text()
    assert RUBRIC_BEGIN in text and RUBRIC_END in text
    assert replace_rubric(text) == text, (
        "the rubric table in notebooks/INSTRUCTORS.md is stale: run "
        "python -m course_lib.grade --write-rubric notebooks/INSTRUCTORS.md"
    )
    assert rubric_table() in text


def test_the_rubric_adds_up():
    assert sum(p.points for p in PARTS if not p.bonus) == 100
    assert sum(p.points for p in PARTS if p.bonus) == 10


def test_a_run_the_grader_had_to_make_itself_is_scored_and_flagged():
    from course_lib.teaching.grading.batch import _row

    made_by_notebook = {"found": True, "problems": []}
    made_by_grader = {"found": True, "problems": [], "made_by_grader": True}
    findings = {"runs": {"dpo_run": made_by_notebook, "ipo_run": made_by_grader}}
    row = _row("learner", {"status": "ok", "findings": findings})
    points = {p.key: p.points for p in AUTO_PARTS}
    assert (row["dpo_run"], row["ipo_run"]) == (points["dpo_run"], points["ipo_run"])  # both right runs: full marks
    assert any("the notebook did not make this run, the grader called the function" in f for f in row["flags"])
    assert not any(f.startswith(dict((p.key, p.section) for p in AUTO_PARTS)["dpo_run"]) for f in row["flags"])
