"""rrhf_candidate_gradients: the closed-form counts against autograd on rrhf_loss_terms."""

import pytest
import torch

from course_lib.maths.losses import rrhf_loss_terms
from course_lib.maths.rrhf_gradients import rrhf_candidate_gradients


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 0.7])
def test_matches_autograd(generator, length_penalty):
    lengths = torch.randint(1, 9, (6, 5), generator=generator)
    logps = (-torch.rand(6, 5, generator=generator, dtype=torch.float64) * 3 * lengths).requires_grad_()
    rewards = torch.randint(0, 3, (6, 5), generator=generator).double()  # ties happen
    rank, sft = rrhf_loss_terms(logps, lengths, rewards, length_penalty=length_penalty)
    (auto_rank,) = torch.autograd.grad(rank.sum(), logps)
    (auto_sft,) = torch.autograd.grad((0.5 * sft).sum(), logps)
    rank_grad, sft_grad = rrhf_candidate_gradients(
        logps.detach(), lengths, rewards, length_penalty=length_penalty, sft_weight=0.5
    )
    assert torch.allclose(rank_grad, auto_rank) and torch.allclose(sft_grad, auto_sft)


def test_the_toy_prompt_of_the_notebook():
    scores, lengths = [-1.4, -0.9, -1.1, -0.5], [4, 6, 3, 8]
    logps = torch.tensor([[s * n for s, n in zip(scores, lengths)]], dtype=torch.float64)
    rank_grad, sft_grad = rrhf_candidate_gradients(logps, torch.tensor([lengths]), torch.tensor([[3.0, 2, 1, 0]]))
    assert torch.allclose(rank_grad, torch.tensor([[-3 / 4, 0.0, 0.0, 3 / 8]], dtype=torch.float64))
    assert sft_grad.tolist() == [[-1.0, 0.0, 0.0, 0.0]]


def test_ordered_scores_get_no_rank_gradient_and_inputs_are_kept():
    logps = torch.tensor([[-1.0, -2.0, -3.0]])
    kept = logps.clone()
    rank_grad, _ = rrhf_candidate_gradients(logps, torch.ones(1, 3), torch.tensor([[2.0, 1.0, 0.0]]))
    assert torch.equal(rank_grad, torch.zeros(1, 3)) and torch.equal(logps, kept)


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="candidate_logps"):
        rrhf_candidate_gradients([[0.0, 1.0]], torch.ones(1, 2), torch.ones(1, 2))
