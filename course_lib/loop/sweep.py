"""A sweep of preference runs, one point per (loss, beta): the reward-against-KL frontier.

Each configuration trains a fresh copy of the reference on the same pairs, steps, batches and seed; all are
trained at once by :func:`course_lib.loop.batched.train_preference_batched` (equal to one
:func:`course_lib.loop.training.train_preference` run each, up to float round-off), then evaluated one by one with
:func:`course_lib.loop.evaluation.evaluate_policy`: true reward of samples, KL from the reference and
held-out preference accuracy, with standard errors. Comparing *frontiers* is what makes DPO on summed
and IPO on averaged log-probs comparable: a single (beta, tau) pair says little, since each beta moves
a run along its own curve.
"""

from __future__ import annotations

import copy
import numbers

import torch
from tqdm.auto import tqdm

from .batched import train_preference_batched
from .evaluation import evaluate_policy


def _check_configs(configs) -> list[tuple[str, float]]:
    if not isinstance(configs, (list, tuple)) or not configs:
        raise ValueError(f"configs must be a non-empty list of (loss, beta) pairs, got {configs!r:.80}")
    checked = []
    for i, config in enumerate(configs):
        if not isinstance(config, (list, tuple)) or len(config) != 2:
            raise ValueError(f"configs[{i}] must be a (loss, beta) pair, got {config!r}")
        loss, beta = config
        if not isinstance(loss, str):
            raise TypeError(f"configs[{i}]: the loss must be a name such as 'dpo' or 'ipo', got {type(loss).__name__}")
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not beta > 0:
            raise ValueError(f"configs[{i}]: beta must be a number > 0, got {beta!r}")
        checked.append((loss, float(beta)))
    return checked


def train_sweep(
    reference: torch.nn.Module,
    tokenizer,
    pairs: list[dict],
    configs: list[tuple[str, float]],
    *,
    eval_pairs: list[dict],
    eval_prompts: list[str],
    n_samples: int = 256,
    progress: bool = True,
    **train_kwargs,
) -> list[dict]:
    """Train one policy per ``(loss, beta)`` of ``configs`` and evaluate each at the end.

    Args:
        reference, tokenizer, pairs: as for :func:`train_preference`; every run starts from a copy of
            ``reference``, which is never trained.
        configs: ``[(loss name, beta), ...]``; the loss's own length convention applies (IPO averages).
        eval_pairs, eval_prompts, n_samples: held-out pairs and prompts for :func:`evaluate_policy`.
        train_kwargs: ``steps``, ``batch_size``, ``lr``, ``seed``, ``device`` ... passed to
            :func:`train_preference_batched` (the keywords of :func:`train_preference`'s settings).

    Returns:
        one dict per configuration, in order: ``loss``, ``beta``, ``history``, and the evaluation's
        ``kl``, ``kl_stderr``, ``reward``, ``reward_stderr`` and ``preference_accuracy``.
    """
    configs = _check_configs(configs)
    seed = train_kwargs.get("seed", 0)
    policies = [copy.deepcopy(reference) for _ in configs]
    histories = train_preference_batched(
        policies, reference, pairs, configs, tokenizer=tokenizer, progress=progress, **train_kwargs
    )
    points = []
    for (loss, beta), policy, history in tqdm(
        list(zip(configs, policies, histories)), desc="evaluating", disable=not progress
    ):
        evaluation = evaluate_policy(
            policy,
            reference,
            tokenizer,
            pairs=eval_pairs,
            prompts=eval_prompts,
            n_samples=n_samples,
            seed=seed,
            with_samples=False,
        )
        points.append({"loss": loss, "beta": beta, "history": history, **evaluation})
    return points
