"""course_lib.maths.rrhf_official reproduces GanjinZero/RRHF's train.py (RRHFTrainer) on small tensors.

The oracle is the official code itself, copied verbatim below (it mutates its ``labels`` argument), and
brute-force loops over rows and positions.
"""

import pytest
import torch
import torch.nn.functional as F

from course_lib.maths.losses import rrhf_loss, rrhf_loss_terms
from course_lib.maths.rrhf_official import (
    IGNORE_INDEX,
    official_as_paper_settings,
    official_gather_logits_labels,
    official_labels,
    official_rank_loss,
    official_rrhf_loss,
    official_scores,
    official_sft_loss,
)


class _OfficialTrainer:
    """RRHFTrainer's loss methods from train.py (main), verbatim, with ``self.args`` reduced to two fields."""

    def __init__(self, rrhf_weight=100.0, length_penalty=1.0):
        self.rrhf_weight, self.length_penalty = rrhf_weight, length_penalty

    def gather_logits_labels(self, logits, labels):
        mask = (labels != -100).float()
        new_logits = logits.clone()  # Create a copy to avoid in-place modification
        labels[labels == -100] = 0
        output = torch.gather(new_logits, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
        output = output * mask  # B * L
        return output

    def get_score(self, logit_label, labels):
        mask = (labels != -100).float()
        length = mask.sum(-1)
        scores = logit_label.sum(-1) / (length**self.length_penalty)
        return scores

    def rrhf_loss(self, scores, idxs, rw_scores):
        diff = scores.unsqueeze(0) - scores.unsqueeze(-1)  # b * b
        rw_diff = rw_scores.unsqueeze(0) - rw_scores.unsqueeze(-1)  # b * b
        aval = torch.bitwise_and(rw_diff > 0, diff < 0)[0]
        return -diff[aval].sum()

    def sft_loss(self, logit_label, idxs, rw_scores):
        max_idx = torch.argmax(rw_scores)
        return -logit_label[max_idx].mean()

    def compute_loss(self, log_probs, labels, rw_scores):
        logit_label = self.gather_logits_labels(log_probs, labels)
        scores = self.get_score(logit_label, labels)
        rrhf_loss = self.rrhf_loss(scores, None, rw_scores)
        sft_loss = self.sft_loss(logit_label, None, rw_scores)
        return self.rrhf_weight * rrhf_loss + sft_loss


def _one_prompt(generator, k=4, width=9, vocab=7, prompt=3):
    """K rows of one prompt: prompt positions and right padding are -100, responses of different lengths."""
    log_probs = F.log_softmax(torch.randn(k, width, vocab, generator=generator, dtype=torch.float64), dim=-1)
    labels = torch.full((k, width), IGNORE_INDEX)
    lengths = torch.tensor([2, 5, 3, width - prompt])[:k]
    for row, n in enumerate(lengths.tolist()):
        labels[row, prompt - 1 : prompt - 1 + n] = torch.randint(vocab, (n,), generator=generator)
    return log_probs, labels, lengths


def _summed(log_probs, labels):
    """Brute force: sum of log_probs[r, t, labels[r, t]] over the positions with a label."""
    out = torch.zeros(labels.shape[0], dtype=log_probs.dtype)
    for r in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[r, t] != IGNORE_INDEX:
                out[r] += log_probs[r, t, labels[r, t]]
    return out


def test_gather_matches_the_official_code_without_touching_the_labels(generator):
    log_probs, labels, _ = _one_prompt(generator)
    kept = labels.clone()
    logit_label, labels_after = official_gather_logits_labels(log_probs, labels)
    assert torch.equal(labels, kept)  # ours copies
    official_labels_arg = labels.clone()
    official = _OfficialTrainer().gather_logits_labels(log_probs, official_labels_arg)
    assert torch.equal(logit_label, official)
    assert torch.equal(labels_after, official_labels_arg)  # what the official code leaves in the caller's labels
    assert not (labels_after == IGNORE_INDEX).any()
    assert torch.allclose(logit_label.sum(-1), _summed(log_probs, labels))


def test_the_official_score_divides_by_the_padded_width(generator):
    log_probs, labels, lengths = _one_prompt(generator)
    logit_label, labels_after = official_gather_logits_labels(log_probs, labels)
    summed = _summed(log_probs, labels)
    width = labels.shape[1]
    official = official_scores(logit_label, labels_after)
    assert torch.allclose(official, summed / width)  # one shared constant: length normalisation lost
    assert torch.allclose(official_scores(logit_label, labels), summed / lengths)  # Eq. 1, had labels been kept
    trainer = _OfficialTrainer()
    mutated = labels.clone()
    assert torch.allclose(trainer.get_score(trainer.gather_logits_labels(log_probs, mutated), mutated), official)
    assert torch.equal(official.argsort(), summed.argsort())  # the summed ranking, for any length_penalty
    assert torch.equal(official_scores(logit_label, labels_after, length_penalty=0.3).argsort(), summed.argsort())


def test_the_official_sft_term_is_a_mean_over_the_padded_row(generator):
    log_probs, labels, lengths = _one_prompt(generator)
    rewards = torch.tensor([[0.5, 2.0, -1.0, 1.0]])
    logit_label, _ = official_gather_logits_labels(log_probs, labels)
    summed = _summed(log_probs, labels)
    sft = official_sft_loss(logit_label, rewards)
    assert torch.allclose(sft, -summed[1] / labels.shape[1])
    assert not torch.allclose(sft, -summed[1] / lengths[1])  # not the token mean
    assert torch.allclose(sft, _OfficialTrainer().sft_loss(logit_label, None, rewards))


def test_the_official_rank_loss_is_eq_2_for_one_prompt(generator):
    scores = torch.randn(5, generator=generator, dtype=torch.float64)
    rewards = torch.tensor([[1.0, 3.0, 1.0, 0.0, 2.0]])  # a tie, which never counts
    rank, _ = rrhf_loss_terms(scores.unsqueeze(0), torch.ones(1, 5), rewards)
    assert torch.allclose(official_rank_loss(scores, rewards), rank[0])
    brute = sum(
        max(0.0, (scores[i] - scores[j]).item()) for i in range(5) for j in range(5) if rewards[0, i] < rewards[0, j]
    )
    assert official_rank_loss(scores, rewards).item() == pytest.approx(brute)


def test_the_first_row_index_breaks_other_shapes():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rewards = torch.tensor([4.0, 3.0, 2.0, 1.0])  # GanjinZero/RRHF issue 29: every pair violated
    assert official_rank_loss(scores, rewards.unsqueeze(0)).item() == pytest.approx(10.0)
    assert official_rank_loss(scores, rewards).item() == 0.0  # no batch dimension: row 0 of rw_diff is all False
    # ... and in general the 1-D mask selects whole rows of diff: minus their sum, which can be negative
    assert official_rank_loss(scores.flip(0), rewards.flip(0)).item() == pytest.approx(-6.0)  # Eq. 2 gives 10
    two_prompts = torch.stack([rewards, rewards])  # (2, K) rewards, 2K scores
    with pytest.raises(RuntimeError):
        official_rank_loss(torch.cat([scores, scores]), two_prompts)


def test_with_two_prompts_the_sft_term_trains_one_row(generator):
    logit_label = torch.randn(8, 6, generator=generator)
    rewards = torch.tensor([[0.0, 1.0, 2.0, 0.5], [3.0, 0.0, 0.0, 1.0]])
    assert torch.equal(official_sft_loss(logit_label, rewards), -logit_label[4].mean())  # prompt 2's best only


@pytest.mark.parametrize("rrhf_weight", [100.0, 1.0, 3.0])
@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
def test_the_official_loss_is_the_papers_with_summed_scores(generator, rrhf_weight, length_penalty):
    log_probs, labels, lengths = _one_prompt(generator)
    rewards = torch.tensor([[0.5, 2.0, -1.0, 1.0]])
    official = official_rrhf_loss(log_probs, labels, rewards, rrhf_weight=rrhf_weight, length_penalty=length_penalty)
    verbatim = _OfficialTrainer(rrhf_weight, length_penalty).compute_loss(log_probs, labels.clone(), rewards)
    assert torch.allclose(official, verbatim)
    settings = official_as_paper_settings(rrhf_weight, labels.shape[1], length_penalty=length_penalty)
    summed = _summed(log_probs, labels).unsqueeze(0)
    paper = rrhf_loss(
        summed,
        lengths.unsqueeze(0),
        rewards,
        length_penalty=settings["length_penalty"],
        sft_weight=settings["sft_weight"],
    )
    assert torch.allclose(official, settings["scale"] * paper[0])


def test_official_labels_shift_the_course_labels():
    course = torch.tensor([[-100, -100, 5, 6, 2, -100]])
    assert official_labels(course).tolist() == [[-100, 5, 6, 2, -100, -100]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rrhf_weight=0.0, padded_width=4), "rrhf_weight"),
        (dict(rrhf_weight=1.0, padded_width=0), "padded_width"),
        (dict(rrhf_weight=1.0, padded_width=2.5), "padded_width"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        official_as_paper_settings(**kwargs)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="labels"):
        official_gather_logits_labels(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError):
        official_scores([0.0], torch.zeros(1, 1))
    with pytest.raises(ValueError, match="course_labels"):
        official_labels(torch.zeros(3, dtype=torch.long))
