"""Scoring a model on encoded rows: the device it lives on, autocast, and summed response log-probs.

Shared by the training loops and the held-out evaluation (:mod:`course_lib.loop.training`,
:mod:`course_lib.loop.evaluation`); the maths is :func:`course_lib.maths.logprobs.token_logps`.
"""

from __future__ import annotations

import contextlib

import torch

from ..maths.logprobs import IGNORE_INDEX, token_logps
from ..toyworld.batching import encode_prompt_response
from ..toyworld.runtime import runs_tiny_models_on_one_thread


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


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; a disabled autocast elsewhere (CPU and MPS compute in fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@runs_tiny_models_on_one_thread
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
@runs_tiny_models_on_one_thread
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
        logps, lengths = response_logps(model, both)
        n = len(chunk)
        out["chosen_logps"].append(logps[:n].cpu())
        out["rejected_logps"].append(logps[n:].cpu())
        out["chosen_lengths"].append(lengths[:n].cpu())
        out["rejected_lengths"].append(lengths[n:].cpu())
    return {k: torch.cat(v) for k, v in out.items()}
