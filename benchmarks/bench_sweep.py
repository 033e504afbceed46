"""N preference runs batched into one (``train_preference_batched``) against N ``train_preference`` runs in a row.

    python benchmarks/bench_sweep.py                 # N = 1, 4, 8, 16; 100 steps of 16 pairs; 1 thread
    python benchmarks/bench_sweep.py --steps 200 --sizes 1 8

On the toy world (``data/reference_model``, the deterministic training pairs), on CPU, in one process. Each
time is a whole call, as a sweep pays it: encoding the pairs, the reference's log-probs, and every step. The
configurations cycle over DPO, IPO and hinge with betas 0.1 to 3. Times are CPU time of this process
(``time.process_time``: with one torch thread it is the work done, and it barely moves when other programs
load the machine); wall-clock times are printed beside them. The last line is
``batched 8 / one run: R``, the time of 8 batched policies over the time of one run (target: R <= 2).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.loop.batched import train_preference_batched  # noqa: E402
from course_lib.loop.training import train_preference  # noqa: E402
from course_lib.toyworld.data import load_preferences  # noqa: E402
from course_lib.toyworld.models import load_model_and_tokenizer  # noqa: E402

LOSSES = ("dpo", "ipo", "hinge")
BETAS = (0.1, 0.3, 1.0, 3.0)


def configs(n: int) -> list[tuple[str, float]]:
    """n (loss, beta) pairs cycling over the losses and betas."""
    return [(LOSSES[i % len(LOSSES)], BETAS[i // len(LOSSES) % len(BETAS)]) for i in range(n)]


def timed(fn, n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn(n)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(n)
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16], help="numbers of policies N")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step (the chapter's runs use 16)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    reference, tokenizer = load_model_and_tokenizer()
    pairs = load_preferences("train")
    settings = {"steps": args.steps, "batch_size": args.batch_size, "seed": 0, "tokenizer": tokenizer}
    settings.update(device="cpu", progress=False)
    print(
        f"toy world: {sum(p.numel() for p in reference.parameters())} parameters, {len(pairs)} pairs, "
        f"{args.steps} steps of {args.batch_size} pairs, torch {torch.__version__}, 1 thread"
    )

    def sequential(n):
        for loss, beta in configs(n):
            train_preference(copy.deepcopy(reference), reference, pairs, loss=loss, beta=beta, **settings)

    def batched(n):
        train_preference_batched([copy.deepcopy(reference) for _ in range(n)], reference, pairs, configs(n), **settings)

    batched(1)  # warm-up: first calls pay for imports and allocations
    one_run = timed(sequential, 1)
    print("\n   N   batched s (wall)    sequential s (wall)   sequential / batched   batched / one run")
    ratios = {}
    for n in args.sizes:
        seq = one_run if n == 1 else timed(sequential, n)
        bat = timed(batched, n)
        ratios[n] = bat[0] / one_run[0]
        print(
            f"{n:4d}   {bat[0]:7.2f} ({bat[1]:6.2f})    {seq[0]:7.2f} ({seq[1]:7.2f})    "
            f"{seq[0] / bat[0]:10.2f}           {ratios[n]:8.2f}"
        )
    if 8 in ratios:
        print(f"batched 8 / one run: {ratios[8]:.2f}")


if __name__ == "__main__":
    main()
