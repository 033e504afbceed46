"""Scoring a model on encoded rows: the device it lives on, autocast, and summed response log-probs.

Shared by the training loops and the held-out evaluation (:mod:`course_lib.loop.training`,
:mod:`course_lib.loop.evaluation`); the maths is :func:`course_lib.maths.logprobs.token_logps`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ..maths.logprobs import IGNORE_INDEX, token_logps
from ..toyworld.batching import encode_prompt_response


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the whole model is assumed to live there)."""
    return next(model.parameters()).device


@contextlib.contextmanager
def borrowed(model: torch.nn.Module, device: torch.device):
    """On CUDA, bring a released model to the GPU for an evaluation and send it back to the CPU after."""
    if device.type != "cuda":
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to("cpu")
        torch.cuda.empty_cache()


def context_limit(model) -> int | None:
    """The number of positions the model can attend to (GPT-2's ``n_positions``, Llama's
    ``max_position_embeddings``), or None when its config does not say."""
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(model, encoded: dict[str, torch.Tensor], describe: Callable[[int], str]) -> None:
    """Every encoded row fits the model's context; the first that does not is named by ``describe(row)``."""
    limit = context_limit(model)
    lengths = encoded["attention_mask"].sum(-1)  # (N,) prompt + response + eos
    too_long = torch.nonzero(lengths > limit).flatten() if limit is not None else []
    if len(too_long):
        row = int(too_long[0])
        raise ValueError(
            f"{describe(row)} is {int(lengths[row])} tokens long (prompt + response + eos), but the model allows "
            f"{limit} positions ({len(too_long)} row(s) too long); shorten or drop those examples"
        )


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; a disabled autocast elsewhere (CPU and MPS compute in fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def response_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, trim: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths for an encoded batch: ``(logps (N,), lengths (N,))``.

    ``batch`` holds ``input_ids``, ``attention_mask``, ``labels`` of shape (N, T) (see
    :func:`course_lib.toyworld.batching.encode_prompt_response`). Log-probs are fp32. ``trim`` drops columns
    that are padding in every row; ``trim=False`` keeps the width fixed, so that a sequence gets
    bit-identical log-probs in any batch (the trainer relies on this: at step 1 the policy's h is
    exactly 0).
    """
    device = model_device(model)
    batch = {k: v.to(device) for k, v in batch.items()}
    width = int(batch["attention_mask"].sum(-1).max()) if trim else batch["input_ids"].shape[1]
    with autocast_for(device):
        logits = model(
            input_ids=batch["input_ids"][:, :width], attention_mask=batch["attention_mask"][:, :width]
        ).logits
    labels = batch["labels"][:, :width]
    logps = token_logps(logits.float(), labels).sum(-1)  # (N,)
    lengths = (labels[:, 1:] != IGNORE_INDEX).sum(-1)  # (N,)
    return logps, lengths


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module, tokenizer, pairs: list[dict], *, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Summed log-probs and lengths of every pair's chosen and rejected response, on CPU.

    Returns ``{"chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths"}``, each (N,).
    """
    out = {"chosen_logps": [], "rejected_logps": [], "chosen_lengths": [], "rejected_lengths": []}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        prompts = [p["prompt"] for p in chunk]
        both = encode_prompt_response(
            tokenizer, prompts + prompts, [p["chosen"] for p in chunk] + [p["rejected"] for p in chunk]
        )
        n = len(chunk)
        check_fits(
            model,
            both,
            lambda row, start=start, n=n: f"pairs[{start + row % n}] (prompt + {('chosen', 'rejected')[row // n]})",
        )
        logps, lengths = response_logps(model, both)
        out["chosen_logps"].append(logps[:n].cpu())
        out["rejected_logps"].append(logps[n:].cpu())
        out["chosen_lengths"].append(lengths[:n].cpu())
        out["rejected_lengths"].append(lengths[n:].cpu())
    return {k: torch.cat(v) for k, v in out.items()}
