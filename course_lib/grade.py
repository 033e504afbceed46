"""The batch grader of Exercise 18.3: ``python -m course_lib.grade SUBMISSION.ipynb ... --out DIR``.

Each submission runs in its own fresh kernel, in a temporary working copy, with a time limit, on the CPU
(unless ``--device``) and with no network. The grader calls the checkers on the learner's own functions and
checks what the learner's run functions returned against the expected figures
(``course_lib.teaching.exercises.expected``); it never trusts what the notebook printed. It writes
``DIR/grades.csv``, ``DIR/feedback/<submission>.md``, ``DIR/results.json`` and ``DIR/summary.txt``, and prints
the summary. See ``notebooks/INSTRUCTORS.md``, "Grading a class". Wrong use (no submissions, a folder instead
of files, an unwritable ``--out``) exits with status 2 and one line naming the option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .teaching.grading.batch import grade_batch
from .teaching.grading.rubric import replace_rubric


class UsageError(Exception):
    """A wrong use of the command line: one line, exit status 2."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.grade",
        description="Grade submitted Exercise 18.3 notebooks: grades.csv, feedback per submission, a summary.",
    )
    parser.add_argument("submissions", nargs="*", metavar="SUBMISSION.ipynb", help="the submitted notebooks")
    parser.add_argument("--out", help="the folder for grades.csv, feedback/, results.json and summary.txt")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per notebook (default 300)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at a time (default 1)")
    parser.add_argument("--device", default="cpu", help="COURSE_DEVICE for the kernels (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="COURSE_SEED for the kernels (default 0)")
    parser.add_argument("--quick", action="store_true", help="short runs: their set-up is checked, not their figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--write-rubric", metavar="INSTRUCTORS.md", help="rewrite the rubric table in it, and exit")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> list[Path]:
    """The submissions as paths; raises UsageError naming the option that is wrong."""
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if not args.submissions:
        raise UsageError("SUBMISSION.ipynb: no submissions given: name one or more notebook files")
    for name in args.submissions:
        if Path(name).is_dir():
            raise UsageError(
                f"SUBMISSION.ipynb: {name} is a folder; name the notebook files (e.g. {Path(name) / '*.ipynb'})"
            )
        if not Path(name).is_file():
            raise UsageError(f"SUBMISSION.ipynb: {name} does not exist")
    if not args.out:
        raise UsageError("--out: give the folder to write grades.csv and the feedback into")
    try:
        (Path(args.out) / "feedback").mkdir(parents=True, exist_ok=True)
        (Path(args.out) / ".grade-write-test").write_text("")
        (Path(args.out) / ".grade-write-test").unlink()
    except OSError as exc:
        raise UsageError(f"--out: {args.out} is not writable ({exc.strerror or exc})") from None
    return [Path(name) for name in args.submissions]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.write_rubric:
            path = Path(args.write_rubric)
            path.write_text(replace_rubric(path.read_text()))
            print(f"rubric table written to {path}")
            return 0
        paths = check_args(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"python -m course_lib.grade: error: {exc}", file=sys.stderr)
        return 2
    options = dict(jobs=args.jobs, timeout=args.timeout, device=args.device, seed=args.seed, quick=args.quick)
    _, summary = grade_batch(paths, args.out, progress=not args.no_progress, **options)
    print(f"{summary}\n\nwritten: {Path(args.out) / 'grades.csv'}, {Path(args.out) / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
