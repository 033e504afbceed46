"""Ancestral sampling from a causal LM, written as an explicit loop over positions.

We do not call ``model.generate``: an explicit loop makes every random draw come
from the ``torch.Generator`` you pass, so the same seed gives the same samples,
and the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import torch

from ..maths.checks import check_finite, check_int
from .batching import decode_response, encode_prompt


@torch.no_grad()
def _sample_ids(
    model, prompt_ids: list[list[int]], *, max_new_tokens, temperature, generator, min_new_tokens, special
) -> list[list[int]]:
    """Samples response ids for B prompts of EQUAL length; returns B lists of ids (without <eos>).

    Equal lengths mean no padding, so the key/value cache can be reused step after step.
    """
    pad, eos, banned = special  # what padding emits, <eos>, the ids never drawn
    device = next(model.parameters()).device
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is not None and len(prompt_ids[0]) + max_new_tokens > limit:
        raise ValueError(f"prompt length {len(prompt_ids[0])} + max_new_tokens {max_new_tokens} > {limit} positions")
    out = model(input_ids=torch.tensor(prompt_ids, device=device), use_cache=True)  # logits: (B, L, V)
    done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)
    steps = []
    for step in range(max_new_tokens):
        logits = out.logits[:, -1].float()  # (B, V): next-token logits
        logits[:, banned] = float("-inf")
        if step < min_new_tokens:
            logits[:, eos] = float("-inf")
        if temperature == 0:
            nxt = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            if generator is not None:  # draw on the generator's device, so a CPU generator works with a CUDA model
                probs = probs.to(generator.device)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)  # finished rows only emit padding
        steps.append(nxt)
        done |= nxt == eos
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        feed = torch.where(done, torch.full_like(nxt, eos), nxt)[:, None]  # (B, 1); finished rows: ignored
        out = model(input_ids=feed, cache=out.cache, use_cache=True)
    responses = []
    for row in torch.stack(steps, dim=1).tolist():  # (B, steps)
        row = row[: row.index(eos)] if eos in row else row
        responses.append([t for t in row if t != pad])
    return responses


def sample_responses(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    min_new_tokens: int = 1,
    batch_size: int = 512,
) -> list[str]:
    """Samples one response per prompt by ancestral sampling; returns B strings (words joined by spaces).

    Each row stops at ``<eos>`` (not included in the string) or after
    ``max_new_tokens`` words. ``<pad>`` and ``<unk>`` are never drawn, and
    ``<eos>`` is blocked for the first ``min_new_tokens`` steps so responses are
    never empty. ``temperature == 0`` means greedy decoding. All randomness comes
    from ``generator`` (the draw happens on its device), so the same seed gives
    the same samples. Prompts are grouped by length (no padding, so the
    key/value cache is exact); the model's train/eval mode is restored afterwards.
    """
    temperature = check_finite("temperature", temperature, minimum=0.0)
    check_int("max_new_tokens", max_new_tokens, minimum=1)  # a response needs at least one token
    check_int("min_new_tokens", min_new_tokens, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens, got {min_new_tokens}, {max_new_tokens}")
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a list of prompts, got {type(prompts).__name__}")
    prompt_ids = [encode_prompt(tokenizer, p, i) for i, p in enumerate(prompts)]
    by_length: dict[int, list[int]] = {}  # prompt length -> row indices, in order of first appearance
    for i, p in enumerate(prompt_ids):
        by_length.setdefault(len(p), []).append(i)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    banned = sorted({t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id) if t is not None and t != eos})
    special = (pad, eos, banned)
    options = dict(max_new_tokens=max_new_tokens, temperature=temperature, generator=generator, special=special)
    responses: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for rows in by_length.values():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                ids = _sample_ids(model, [prompt_ids[i] for i in chunk], min_new_tokens=min_new_tokens, **options)
                for i, r in zip(chunk, ids):
                    responses[i] = r
    finally:
        model.train(was_training)
    return [decode_response(tokenizer, r) for r in responses]
