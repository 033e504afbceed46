"""What the official RRHF code computes, beside what the paper writes (Yuan et al. 2023, arXiv:2304.05302).

The official implementation is ``RRHFTrainer`` in ``train.py`` of GanjinZero/RRHF (main branch, last
changed 2023-04-11; ``train_alpaca_prompt.py`` has the same methods). It trains on ONE prompt per device
(``train.sh``: ``--per_device_train_batch_size 1``): its K candidates are the rows of one padded batch,
each row ``prompt + response + eos`` padded to the batch's width T, with labels already shifted by the
collator (``labels[t]`` is the token that ``logits[t]`` predicts; -100 on the prompt and the padding).

Its behaviour differs from the paper's Eqs. 1-5 in four ways, each reproduced here on small tensors:

1. ``gather_logits_labels`` overwrites the caller's -100 labels with 0 *in place* (``labels[labels ==
   -100] = 0``) before ``get_score`` builds its mask from the same tensor, so every candidate's
   "length" is the padded width T: the score is ``summed log-prob / T ** length_penalty``, one shared
   constant, and the length normalisation of Eq. 1 is lost (the repository's issue 37). The ranking the
   rank loss sees is the ranking of summed log-probs, whatever ``length_penalty`` is.
2. ``sft_loss`` is ``-logit_label[max_idx].mean()``: a mean over the whole padded row (prompt and padding
   positions count, as zeros), i.e. ``-summed log-prob / T``; not the paper's sum (Eq. 4), nor the token
   mean ``sum / |y_best|`` (issue 51).
3. ``rrhf_loss`` keeps ``[0]``, the first prompt's reward matrix, and ``sft_loss`` takes ``argmax`` over the
   flattened rewards: right with one prompt per device only (with two prompts the rank loss raises a shape
   error, and the SFT term trains one response for the whole batch); an unmerged pull request ("fix batch
   size bug") reshapes both per prompt.
4. ``rrhf_weight`` defaults to 100 in the dataclass; the released ``train.sh`` passes ``--rrhf_weight 1``.

Together, with one prompt per device and the default length_penalty = 1, the official loss is
``(rrhf_weight * L_rank(summed log-probs) + L_ft) / T``: the paper's loss with ``length_penalty=0`` and
``sft_weight=1/rrhf_weight``, scaled by ``rrhf_weight / T`` (:func:`official_as_paper_settings`).
"""

import torch

from .checks import check_int, check_positive
from .logprobs import IGNORE_INDEX


def _check_rows(token_log_probs: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(token_log_probs, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("token_log_probs and labels must be torch.Tensors")
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape (R, T), got {tuple(labels.shape)}")
    if token_log_probs.shape[:2] != labels.shape:
        raise ValueError(
            f"token_log_probs {tuple(token_log_probs.shape)} must start with the shape of labels {tuple(labels.shape)}"
        )


def official_labels(course_labels: torch.Tensor) -> torch.Tensor:
    """The official collator's labels from the course's (unshifted) labels: shift left by one. (R, T) -> (R, T).

    The course's ``labels[t]`` is the token at position t (-100 on prompt and padding), and ``token_logps``
    shifts; the official ``labels[t]`` is the token that ``logits[t]`` predicts, with -100 at the end.
    """
    if not isinstance(course_labels, torch.Tensor) or course_labels.dim() != 2:
        raise ValueError("course_labels must be a (R, T) tensor")
    pad = torch.full_like(course_labels[:, :1], IGNORE_INDEX)
    return torch.cat([course_labels[:, 1:], pad], dim=1)


def official_gather_logits_labels(log_probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``RRHFTrainer.gather_logits_labels``, without its side effect: ``(logit_label, labels_after)``.

    ``logit_label[r, t] = log_probs[r, t, labels[r, t]]`` where ``labels[r, t] != -100``, else 0: (R, T).
    ``labels_after`` is what the official code leaves in the CALLER's labels tensor: every -100 replaced
    by 0 (it does this in place). This function copies instead, so that the course's tensors stay intact.

    Args:
        log_probs: (R, T, V) log-softmax of the logits.
        labels: (R, T) official (shifted) labels, -100 where nothing is predicted.
    """
    _check_rows(log_probs, labels)
    mask = (labels != IGNORE_INDEX).to(log_probs.dtype)  # (R, T), computed before the overwrite
    labels_after = labels.clone()
    labels_after[labels_after == IGNORE_INDEX] = 0  # the official code does this to `labels` itself
    logit_label = torch.gather(log_probs, dim=-1, index=labels_after.unsqueeze(-1)).squeeze(-1)  # (R, T)
    return logit_label * mask, labels_after


def official_scores(logit_label: torch.Tensor, labels: torch.Tensor, *, length_penalty: float = 1.0) -> torch.Tensor:
    """``RRHFTrainer.get_score``: ``logit_label.sum(-1) / length ** length_penalty``, length = #(labels != -100).

    Called by the official code with the labels that ``gather_logits_labels`` has already overwritten,
    so ``length`` is the padded width T for every row. (R, T), (R, T) -> (R,).
    """
    _check_rows(logit_label, labels)
    length = (labels != IGNORE_INDEX).to(logit_label.dtype).sum(-1)  # (R,)
    return logit_label.sum(-1) / length**length_penalty


def official_rank_loss(scores: torch.Tensor, rw_scores: torch.Tensor) -> torch.Tensor:
    """``RRHFTrainer.rrhf_loss``, line for line. scores: (R,); rw_scores: (1, K) per device (R = K). -> ().

    ``diff[i, j] = p_j - p_i``; pairs with ``r_j > r_i`` and ``p_j < p_i`` add ``p_i - p_j``: the hinge of
    Eq. 2. The ``[0]`` takes the first prompt's reward matrix. With rw_scores of shape (K,) (no batch
    dimension) ``rw_diff`` is (K, K) and ``[0]`` is its first row: a 1-D mask that selects whole ROWS of
    ``diff``, so the result is minus the sum of those rows, and can be negative (scores (4, 3, 2, 1) with
    rewards (1, 2, 3, 4) give -6, where Eq. 2 gives 10; issue 29's example gives 0). With two prompts,
    (2, K), the shapes no longer broadcast and torch raises a RuntimeError.
    """
    diff = scores.unsqueeze(0) - scores.unsqueeze(-1)  # (R, R)
    rw_diff = rw_scores.unsqueeze(0) - rw_scores.unsqueeze(-1)  # (1, K, K) for rw_scores (1, K)
    aval = torch.bitwise_and(rw_diff > 0, diff < 0)[0]
    return -diff[aval].sum()


def official_sft_loss(logit_label: torch.Tensor, rw_scores: torch.Tensor) -> torch.Tensor:
    """``RRHFTrainer.sft_loss``: ``-logit_label[argmax(rw_scores)].mean()``. (R, T), (B, K) -> ().

    A mean over the whole padded row: ``-summed log-prob of y_best / T``. ``argmax`` runs over the
    flattened rewards, so with B prompts it picks ONE row, the best of the whole batch.
    """
    max_idx = torch.argmax(rw_scores)
    return -logit_label[max_idx].mean()


def official_rrhf_loss(
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    rw_scores: torch.Tensor,
    *,
    rrhf_weight: float = 100.0,  # train.py's TrainingArguments default
    length_penalty: float = 1.0,
) -> torch.Tensor:
    """``RRHFTrainer.compute_loss`` for one prompt: ``rrhf_weight * rrhf_loss + sft_loss``. -> ().

    The scores are computed with the labels as ``gather_logits_labels`` leaves them (the official order
    of calls), so the length of every candidate is the padded width T.

    Args:
        log_probs: (K, T, V) log-softmax of the policy's logits for the K candidates of one prompt.
        labels: (K, T) official (shifted) labels; not modified.
        rw_scores: (1, K) rewards.
    """
    logit_label, labels_after = official_gather_logits_labels(log_probs, labels)
    scores = official_scores(logit_label, labels_after, length_penalty=length_penalty)  # (K,)
    return rrhf_weight * official_rank_loss(scores, rw_scores) + official_sft_loss(logit_label, rw_scores)


def official_as_paper_settings(rrhf_weight: float, padded_width: int, *, length_penalty: float = 1.0) -> dict:
    """The paper-form settings that the official loss equals, for one prompt per device.

    The official score is ``summed / T ** length_penalty`` and its SFT term ``summed_best / T``, so
    ``official = scale * rrhf_loss(logps, lengths, rewards, length_penalty=0, sft_weight=sft_weight)`` with
    ``scale = rrhf_weight / T ** length_penalty`` and ``sft_weight = T ** (length_penalty - 1) / rrhf_weight``
    (at the default length_penalty = 1: ``scale = rrhf_weight / T``, ``sft_weight = 1 / rrhf_weight``).

    Returns:
        ``{"length_penalty": 0.0, "sft_weight": ..., "scale": ...}``.
    """
    rrhf_weight = check_positive("rrhf_weight", rrhf_weight)
    width = float(check_int("padded_width", padded_width, minimum=1))
    return {
        "length_penalty": 0.0,
        "sft_weight": width ** (length_penalty - 1.0) / rrhf_weight,
        "scale": rrhf_weight / width**length_penalty,
    }
