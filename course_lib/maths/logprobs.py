"""Log-probabilities of response tokens under a causal LM.

Convention (Hugging Face): ``labels`` are aligned with ``input_ids``; the logits at position t predict
the token at t + 1, so both functions shift inside. Positions whose label is ``ignore_index`` (the prompt
and padding) are not scored.
"""

import torch

from .checks import check_logits_and_labels

IGNORE_INDEX = -100


class _ScoredLogSumExp(torch.autograd.Function):
    """``logsumexp(logits, -1)`` at scored positions and 0 elsewhere; no gradient reaches unscored positions.

    Masking *before* the normaliser matters for training: with an ``inf`` or NaN logit at a prompt or
    padding position, ``torch.where`` after ``torch.logsumexp`` gives the right value but a NaN gradient
    (0 * exp(nan)), which Adam writes into the weights. The forward is ``torch.logsumexp`` itself (the
    same values, bit for bit); the backward is its usual ``grad * softmax(logits)``, zeroed where
    unscored. Only the logits (a view) are saved, so no (B, T, V) copy is held for backward.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
        normaliser = torch.logsumexp(logits, dim=-1)  # (b, T-1)
        normaliser = torch.where(scored, normaliser, torch.zeros((), dtype=normaliser.dtype, device=normaliser.device))
        ctx.save_for_backward(logits, scored, normaliser)
        return normaliser

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        logits, scored, normaliser = ctx.saved_tensors
        grad_logits = (logits - normaliser.unsqueeze(-1)).exp_()  # softmax, one chunk-sized temporary
        grad_logits.mul_(grad.unsqueeze(-1))
        grad_logits.masked_fill_(~scored.unsqueeze(-1), 0.0)  # inf * 0 or NaN at unscored positions -> 0
        return grad_logits, None


def _check_label_ids(labels: torch.Tensor, vocab_size: int, ignore_index: int) -> None:
    """Every scored label is a token id in [0, vocab_size)."""
    scored = labels[:, 1:][labels[:, 1:] != ignore_index]
    if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= vocab_size):
        bad = scored[(scored < 0) | (scored >= vocab_size)][0].item()
        raise ValueError(
            f"labels hold token id {bad}, outside the vocabulary [0, {vocab_size}) of the logits "
            f"(only {ignore_index} marks unscored positions)"
        )


def token_logps(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-token log-probability of each next label: ``log softmax(logits[:, t])[labels[:, t+1]]``.

    Computed as ``logit[label] - logsumexp(logits)`` over at most 8 chunks of rows, so no second
    (B, T, V) tensor is ever held (the naive ``logits.log_softmax(-1).gather(...)`` holds a full copy;
    TRL's ``selective_log_softmax`` uses the same trick). Gradients flow as usual through scored
    positions and not at all through unscored ones (the mask comes before the normaliser), so an
    ``inf`` or NaN logit at a prompt or padding position gives neither a NaN value nor a NaN gradient.

    Args:
        logits: (B, T, V) floating point, from the model for ``input_ids``.
        labels: (B, T) integer token ids aligned with ``input_ids``; ``ignore_index`` where unscored.

    Returns:
        (B, T-1) in the logits' dtype; entry [b, t] scores ``labels[b, t+1]``, and is 0 where that
        label is ``ignore_index``.
    """
    check_logits_and_labels(labels, logits=logits)
    _check_label_ids(labels, logits.shape[-1], ignore_index)
    next_logits = logits[:, :-1, :]  # (B, T-1, V), a view
    next_labels = labels[:, 1:]  # (B, T-1)
    scored = next_labels != ignore_index  # (B, T-1)
    safe_labels = torch.where(scored, next_labels, torch.zeros_like(next_labels)).long()
    # At most 8 chunks of rows: each chunk's fp32 logsumexp holds ~1/8 of the logits at a time.
    chunk_size = -(-next_logits.shape[0] // 8)
    chunks = []
    for chunk_logits, chunk_labels, chunk_scored in zip(
        next_logits.split(chunk_size), safe_labels.split(chunk_size), scored.split(chunk_size)
    ):
        picked = chunk_logits.gather(-1, chunk_labels.unsqueeze(-1)).squeeze(-1)  # (b, T-1)
        # torch's reductions accumulate half precision in fp32 already: no fp32 copy of the chunk
        normaliser = _ScoredLogSumExp.apply(chunk_logits, chunk_scored)  # (b, T-1); 0 where unscored
        chunks.append(picked - normaliser)
    per_token = torch.cat(chunks)  # (B, T-1)
    return torch.where(scored, per_token, torch.zeros_like(per_token))  # 0 where unscored, even if logits there are inf


def sequence_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    average: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Log-probability of each sequence's scored tokens: ``sum_t log pi(y_t | x, y_<t)``.

    ``average=False`` returns the *summed* log-prob (DPO paper, Mitchell's reference code, TRL's
    ``logps/*`` metrics). ``average=True`` divides by the number of scored tokens: the
    length-normalised score of RRHF (Eq. 1) and what TRL feeds IPO.

    Args:
        logits: (B, T, V).
        labels: (B, T) integer ids aligned with the inputs; ``ignore_index`` marks prompt and padding.

    Returns:
        (B,) summed (or averaged) log-probabilities.
    """
    per_token = token_logps(logits, labels, ignore_index=ignore_index)  # (B, T-1)
    summed = per_token.sum(-1)  # (B,)
    if not average:
        return summed
    n_scored = (labels[:, 1:] != ignore_index).sum(-1)  # (B,)
    if bool((n_scored == 0).any()):
        rows = torch.nonzero(n_scored == 0).flatten().tolist()
        raise ValueError(f"cannot average: sequences {rows} have no scored token (all labels are {ignore_index})")
    return summed / n_scored.to(summed.dtype)
