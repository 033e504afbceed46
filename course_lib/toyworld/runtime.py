"""How the toy world runs: the seed every notebook uses, and one intra-op thread for tiny models on the CPU.

- ``course_seed()`` reads ``$COURSE_SEED`` (default 0). Notebooks take every seed from it (training, data
  order, sampling), so ``COURSE_SEED=1 jupyter nbconvert --execute ...`` reruns the chapter on other draws:
  the printed figures change, and the claims hold (calibrated over seeds 0-7: ``notebooks/CLAIMS.md``).
- ``tiny_model_threads(model)`` runs a block with one torch intra-op thread when ``model`` is small and on the
  CPU. A 0.1M-parameter model gains nothing from more threads, and torch's OpenMP threads spin against every
  other process on a busy machine (a notebook took 255 s instead of 41 s beside one busy process). A real
  model (more than ``TINY_MODEL_PARAMETERS``) keeps torch's threads.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable

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
    try:
        seed = int(raw)
    except ValueError:
        raise ValueError(f"{SEED_VARIABLE} must be a non-negative integer, got {raw!r}") from None
    if seed < 0:
        raise ValueError(f"{SEED_VARIABLE} must be a non-negative integer, got {raw!r}")
    return seed


def is_tiny_cpu_model(model: torch.nn.Module) -> bool:
    """True when every parameter of ``model`` is on the CPU and there are at most TINY_MODEL_PARAMETERS."""
    n_parameters, on_cpu = 0, True
    for parameter in model.parameters():
        n_parameters += parameter.numel()
        on_cpu = on_cpu and parameter.device.type == "cpu"
    return on_cpu and n_parameters <= TINY_MODEL_PARAMETERS


@contextlib.contextmanager
def tiny_model_threads(*models: torch.nn.Module):
    """Runs the block with one torch intra-op thread if every model given is tiny and on the CPU.

    Restores the previous thread count afterwards, also when the block raises. A block with any larger
    model, or a model on a GPU, runs unchanged.
    """
    if not models or not all(is_tiny_cpu_model(m) for m in models):
        yield
        return
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def runs_tiny_models_on_one_thread(fn: Callable) -> Callable:
    """Decorator: ``fn`` runs under ``tiny_model_threads`` of the models among its arguments."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        models = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.nn.Module)]
        with tiny_model_threads(*models):
            return fn(*args, **kwargs)

    return wrapper
