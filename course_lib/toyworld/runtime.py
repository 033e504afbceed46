"""How the toy world runs: the seed every notebook uses, and one intra-op thread for tiny models on the CPU.

- ``course_seed()`` reads ``$COURSE_SEED`` (default 0). Notebooks take every seed from it (training, data
  order, sampling), so ``COURSE_SEED=1 jupyter nbconvert --execute ...`` reruns the chapter on other draws:
  the printed figures change, and the claims hold (calibrated over seeds 0-7: ``notebooks/CLAIMS.md``).
- Threads are set once, where a tiny model's work starts: the training loop and the evaluator run under
  ``tiny_model_threads(model)``, the CLIs too, and a notebook calls ``use_one_thread_if_tiny(model)`` in its
  setup cell. A 0.1M-parameter model gains nothing from more threads, and torch's OpenMP threads spin
  against every other process on a busy machine (a notebook took 255 s instead of 41 s beside one busy
  process). A real model (more than ``TINY_MODEL_PARAMETERS``) keeps torch's threads.
"""

from __future__ import annotations

import contextlib
import os

import torch

SEED_VARIABLE = "COURSE_SEED"
TINY_MODEL_PARAMETERS = 5_000_000


def course_seed() -> int:
    """The chapter's seed: ``int($COURSE_SEED)``, or 0 when it is not set.

    Raises:
        ValueError: ``$COURSE_SEED`` is not a non-negative integer.
    """
    raw = os.environ.get(SEED_VARIABLE, "").strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(f"{SEED_VARIABLE} must be a non-negative integer, got {raw!r}")
    return int(raw)


def is_tiny_cpu_model(model: torch.nn.Module) -> bool:
    """True when every parameter of ``model`` is on the CPU and there are at most TINY_MODEL_PARAMETERS."""
    parameters = list(model.parameters())
    on_cpu = all(p.device.type == "cpu" for p in parameters)
    return on_cpu and sum(p.numel() for p in parameters) <= TINY_MODEL_PARAMETERS


def use_one_thread_if_tiny(*models: torch.nn.Module) -> int:
    """One torch intra-op thread if every model given is tiny and on the CPU; returns the count before.

    For a notebook's setup cell (``use_one_thread_if_tiny(reference)``); a larger model changes nothing.
    """
    threads = torch.get_num_threads()
    if models and all(is_tiny_cpu_model(m) for m in models):
        torch.set_num_threads(1)
    return threads


@contextlib.contextmanager
def tiny_model_threads(*models: torch.nn.Module):
    """Runs the block under :func:`use_one_thread_if_tiny`; restores the thread count after, also on error."""
    threads = use_one_thread_if_tiny(*models)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
