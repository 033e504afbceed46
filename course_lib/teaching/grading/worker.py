"""The batch grader's worker: ``python -m course_lib.teaching.grading.worker NOTEBOOK --result FILE``.

Grades one submission (:func:`.execute.grade_one`) and writes what it found as JSON to ``FILE``; the batch
(:mod:`.batch`) starts one such process per submission.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .execute import grade_one


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Grade one submission (the batch grader's worker).")
    parser.add_argument("notebook")
    parser.add_argument("--result", required=True)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    result = grade_one(args.notebook, timeout=args.timeout, device=args.device, seed=args.seed, quick=args.quick)
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
