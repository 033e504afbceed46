"""Rebuild the toy world's data: ``python -m course_lib.build_data``.

    python -m course_lib.build_data [--out DIR] [--seed 0] [--small] [--force]
    python -m course_lib.build_data --d1-sweep     # only the IPO bandit's stored sweep (a few minutes)

The build itself is :mod:`course_lib.toyworld.build` (and :func:`course_lib.toyworld.bandit.build_d1_sweep`);
:func:`build` gives it the library's SFT loop (:func:`course_lib.loop.training.train_sft`) for the reference model.
"""

from __future__ import annotations

import argparse
import sys
import time

from .loop.training import train_sft
from .toyworld import build as toy_build
from .toyworld.bandit import build_d1_sweep
from .toyworld.build import BuildRefused


def build(out=None, **options) -> dict:
    """:func:`course_lib.toyworld.build.build` (same keywords) with the library's ``train_sft``."""
    return toy_build.build(out, train_sft=train_sft, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.build_data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: the repository's data/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny version for tests (a few seconds)")
    parser.add_argument(
        "--d1-sweep",
        action="store_true",
        help="rebuild only data/bandit/d1_sweep.pt, the IPO bandit's stored sweep (a few minutes)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="build into --out even when that deletes files no earlier build wrote there",
    )
    args = parser.parse_args(argv)
    try:
        if args.d1_sweep:
            began = time.perf_counter()
            print(f"wrote {build_d1_sweep()} in {time.perf_counter() - began:.0f} s")
            return 0
        build(args.out, seed=args.seed, small=args.small, force=args.force)
    except BuildRefused as err:
        print(f"{parser.prog}: error: --out: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{parser.prog}: interrupted; {args.out or 'the data folder'} may be incomplete: rerun the same command "
            "with --force to rebuild it (or restore data/ with `git checkout -- data/`)",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
