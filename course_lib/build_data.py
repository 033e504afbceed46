"""Rebuild the toy world's data: ``python -m course_lib.build_data``.

    python -m course_lib.build_data [--out DIR] [--seed 0] [--small]
    python -m course_lib.build_data --d1-sweep     # only the IPO bandit's stored sweep (a few minutes)

The build itself is :mod:`course_lib.toyworld.build` (and :func:`course_lib.toyworld.bandit.build_d1_sweep`).
"""

from __future__ import annotations

import argparse
import time

from .toyworld.bandit import build_d1_sweep
from .toyworld.build import build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m course_lib.build_data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: the repository's data/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny version for tests (a few seconds)")
    parser.add_argument(
        "--d1-sweep",
        action="store_true",
        help="rebuild only data/bandit/d1_sweep.pt, the IPO bandit's stored sweep (a few minutes)",
    )
    args = parser.parse_args(argv)
    if args.d1_sweep:
        began = time.perf_counter()
        print(f"wrote {build_d1_sweep()} in {time.perf_counter() - began:.0f} s")
        return
    build(args.out, seed=args.seed, small=args.small)


if __name__ == "__main__":
    main()
