"""The maths under faults (issue 12): no NaN gradient through unscored positions, exact answers where
floats overflow, and every bad argument named.

Items covered: 1 (mask before the normaliser), 9 (NaN reward in RRHF), 10 (DPO where beta*h
overflows), 11 (sequence_kl where both models put -inf on a token), 14 (unchecked arguments), 19
(tensors on different devices; numpy scalars as hyperparameters).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.maths.bandit import bandit_kl, ipo_bandit_optimum
from course_lib.maths.kl import kl_estimators, sequence_kl
from course_lib.maths.logprobs import IGNORE_INDEX, sequence_logps, token_logps
from course_lib.maths.losses import (
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log_ratio_margin,
    rrhf_loss,
    rrhf_loss_terms,
    rrhf_scores,
)
from course_lib.maths.metrics import implicit_rewards, preference_metrics
from course_lib.toyworld.bandit import train_bandit

PAIRWISE = (dpo_loss, ipo_loss, hinge_loss)


def _logits_and_labels(dtype=torch.float32, seed=0):
    """(2, 6, 5) logits; row 0: prompt of 2 tokens, 3 scored, 1 padding; row 1: prompt 1, 4 scored, 1 padding."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 6, 5, generator=generator).to(dtype)
    labels = torch.tensor([[3, 1, 4, 0, 2, IGNORE_INDEX], [1, 2, 3, 4, 0, IGNORE_INDEX]])
    labels[0, :2] = IGNORE_INDEX  # prompt
    labels[1, :1] = IGNORE_INDEX
    return logits, labels


def _unmasked_token_logps(logits, labels):
    """The library's formula before issue 12: ``logit[label] - torch.logsumexp(logits)``, masked after."""
    next_labels = labels[:, 1:]
    scored = next_labels != IGNORE_INDEX
    picked = logits[:, :-1].gather(-1, next_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    per_token = picked - torch.logsumexp(logits[:, :-1], dim=-1)
    return torch.where(scored, per_token, torch.zeros_like(per_token))


# ----------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("where", ["prompt", "padding"])
@pytest.mark.parametrize("average", [False, True])
def test_no_gradient_flows_through_unscored_positions(bad, where, average):
    logits, labels = _logits_and_labels()
    clean = sequence_logps(logits, labels, average=average)
    # the logits at position t score labels[:, t+1]: position 0 of row 0 scores a prompt token,
    # position 4 of row 0 scores the padding at 5
    position = 0 if where == "prompt" else 4
    broken = logits.clone()
    broken[0, position, 2] = bad
    broken.requires_grad_(True)
    value = sequence_logps(broken, labels, average=average)
    assert torch.equal(value, clean)
    value.sum().backward()
    assert torch.isfinite(broken.grad).all()
    assert (broken.grad[0, position] == 0).all()  # nothing flows into an unscored position
    assert (broken.grad[:, -1] == 0).all()  # the last position predicts nothing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_masking_keeps_values_and_gradients_on_finite_inputs(dtype):
    logits, labels = _logits_and_labels(dtype, seed=3)
    ours = logits.clone().requires_grad_(True)
    before = logits.clone().requires_grad_(True)
    value = token_logps(ours, labels)
    expected = _unmasked_token_logps(before, labels)
    assert torch.equal(value, expected)  # the forward is the same computation, bit for bit
    upstream = torch.randn(value.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    value.backward(upstream)
    expected.backward(upstream)
    tolerance = {torch.float32: 1e-6, torch.float64: 1e-12}.get(dtype, 1e-2)
    torch.testing.assert_close(ours.grad, before.grad, rtol=tolerance, atol=tolerance)


def test_masked_normaliser_passes_gradcheck():
    logits, labels = _logits_and_labels(torch.float64, seed=5)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: sequence_logps(x, labels, average=True), (logits,))


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_sequence_kl_no_gradient_through_unscored_positions(bad):
    logits, labels = _logits_and_labels()
    ref = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    clean = sequence_kl(logits, ref, labels)
    broken = logits.clone()
    broken[0, 0, 1] = bad
    broken_ref = ref.clone()
    broken_ref[0, 4, 3] = bad
    broken.requires_grad_(True)
    value = sequence_kl(broken, broken_ref, labels)
    torch.testing.assert_close(value, clean)
    value.sum().backward()
    assert torch.isfinite(broken.grad).all() and (broken.grad[0, 0] == 0).all()


# ----------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("fn", [rrhf_loss_terms, rrhf_loss])
def test_rrhf_refuses_a_nan_reward(fn):
    logps = torch.tensor([[-3.0, -4.0, -5.0]])
    lengths = torch.tensor([[3, 4, 5]])
    rewards = torch.tensor([[1.0, float("nan"), 0.0]])
    with pytest.raises(ValueError, match=r"candidate_rewards .*NaN"):
        fn(logps, lengths, rewards)


def test_rrhf_orders_infinite_rewards():
    logps = torch.tensor([[-3.0, -8.0]])
    lengths = torch.tensor([[1, 1]])
    rank, sft = rrhf_loss_terms(logps, lengths, torch.tensor([[float("-inf"), float("inf")]]))
    assert rank.item() == 5.0 and sft.item() == 8.0  # the +inf candidate is the best, -inf the worst


# ----------------------------------------------------------------------------- item 10
def _pair_with_margin(h: float, dtype=torch.float32):
    zeros = torch.zeros(1, dtype=dtype)
    return torch.tensor([h], dtype=dtype), zeros, zeros.clone(), zeros.clone()


@pytest.mark.parametrize(
    "h, beta, dtype",
    [
        (6e4, 2.0, torch.float16),
        (float("inf"), 0.1, torch.float32),
        (3e38, 10.0, torch.float32),
        (1e38, 1e3, torch.bfloat16),
    ],
)
def test_dpo_loss_is_zero_where_beta_h_overflows(h, beta, dtype):
    pc, pr, rc, rr = _pair_with_margin(h, dtype)
    pc.requires_grad_(True)
    loss = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert loss.item() == 0.0
    loss.sum().backward()
    assert pc.grad.item() == 0.0


def test_dpo_loss_with_smoothing_and_an_infinite_margin_is_infinite():
    # eps * softplus(z) -> eps * inf: the exact cDPO loss is +inf there, not NaN
    pc, pr, rc, rr = _pair_with_margin(float("inf"))
    assert dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1).item() == math.inf
    pc, pr, rc, rr = _pair_with_margin(float("-inf"))
    assert dpo_loss(pc, pr, rc, rr, beta=0.1).item() == math.inf


def test_dpo_loss_unchanged_on_ordinary_margins():
    h = torch.linspace(-30, 30, 13)
    zeros = torch.zeros_like(h)
    for eps in (0.0, 0.2):
        z = 0.5 * h - 0.3
        expected = -(1 - eps) * torch.nn.functional.logsigmoid(z) - eps * torch.nn.functional.logsigmoid(-z)
        got = dpo_loss(h, zeros, zeros, zeros, beta=0.5, label_smoothing=eps, offset=0.3)
        torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------- item 11
def test_sequence_kl_where_both_models_put_minus_inf_on_a_token():
    logits, labels = _logits_and_labels()
    ref = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    policy = logits.clone()
    policy[:, :, 4] = float("-inf")  # token 4 impossible under both models
    ref[:, :, 4] = float("-inf")
    got = sequence_kl(policy, ref, labels)
    expected = sequence_kl(policy[..., :4], ref[..., :4], labels)  # labels only mark the scored positions
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)


def test_sequence_kl_is_infinite_where_only_the_reference_rules_a_token_out():
    logits, labels = _logits_and_labels()
    ref = logits.clone()
    ref[0, 2, 1] = float("-inf")  # position 2 of row 0 is scored
    assert sequence_kl(logits, ref, labels)[0].item() == math.inf


# ----------------------------------------------------------------------------- item 14
def _four(b=3):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(b, generator=generator) for _ in range(4)]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_dpo_offset_must_be_finite(value):
    with pytest.raises(ValueError, match="offset"):
        dpo_loss(*_four(), beta=0.1, offset=value)


@pytest.mark.parametrize("name", ["length_penalty", "sft_weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_rrhf_weights_must_be_finite(name, value):
    logps, lengths, rewards = torch.tensor([[-3.0, -4.0]]), torch.tensor([[3, 4]]), torch.tensor([[1.0, 0.0]])
    with pytest.raises(ValueError, match=name):
        rrhf_loss(logps, lengths, rewards, **{name: value})


def test_rrhf_sft_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="sft_weight"):
        rrhf_loss(torch.tensor([[-3.0, -4.0]]), torch.tensor([[3, 4]]), torch.tensor([[1.0, 0.0]]), sft_weight=-1.0)


@pytest.mark.parametrize("lengths", [[[3, 0]], [[3, -2]], [[3.0, float("nan")]]])
def test_rrhf_scores_refuses_a_length_that_is_not_positive(lengths):
    with pytest.raises(ValueError, match="candidate_lengths"):
        rrhf_scores(torch.tensor([[-3.0, -4.0]]), torch.tensor(lengths))


def test_rrhf_scores_refuses_bad_shapes_and_types():
    with pytest.raises(ValueError, match="candidate_lengths"):
        rrhf_scores(torch.tensor([[-3.0, -4.0]]), torch.tensor([[3, 4, 5]]))
    with pytest.raises(TypeError, match="candidate_logps"):
        rrhf_scores([[-3.0, -4.0]], torch.tensor([[3, 4]]))


def test_preference_metrics_refuses_an_empty_batch():
    empty = torch.zeros(0)
    with pytest.raises(ValueError, match="empty"):
        preference_metrics(empty, empty, empty, empty, beta=0.1)


def test_bandit_refuses_nan_reference_probabilities():
    with pytest.raises(ValueError, match="ref_probs"):
        ipo_bandit_optimum([(0, 1)], beta=0.1, ref_probs=[0.5, float("nan")])
    with pytest.raises(ValueError, match="ref_probs"):
        train_bandit([(0, 1)], loss="ipo", beta=0.1, steps=1, ref_probs=[float("nan"), 1.0])


@pytest.mark.parametrize("pair", [(0, 1.7), (0.5, 1), (True, 0)])
def test_bandit_refuses_action_indices_that_are_not_integers(pair):
    with pytest.raises((TypeError, ValueError), match="preferences"):
        ipo_bandit_optimum([pair, (1, 2)], beta=0.1)


@pytest.mark.parametrize("probs", [[0.5, 0.6, 0.1], [1.2, -0.2, 0.0], [float("nan"), 0.5, 0.5], [[0.3, 0.3, 0.3]]])
def test_bandit_kl_refuses_a_non_distribution(probs):
    with pytest.raises(ValueError, match="probs"):
        bandit_kl(torch.tensor(probs))


def test_bandit_kl_keeps_working_on_distributions():
    probs = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(bandit_kl(probs), torch.tensor([math.log(3), 0.0]))


# ----------------------------------------------------------------------------- item 19: devices, numpy scalars
def _on_meta(tensors, index):
    return [t.to("meta") if i == index else t for i, t in enumerate(tensors)]


@pytest.mark.parametrize("fn", [*PAIRWISE, log_ratio_margin, preference_metrics])
def test_pairwise_maths_names_tensors_on_different_devices(fn):
    kwargs = {} if fn is log_ratio_margin else {"beta": 0.1}
    with pytest.raises(ValueError, match=r"ref_rejected_logps.*meta"):
        fn(*_on_meta(_four(), 3), **kwargs)


def test_other_maths_name_tensors_on_different_devices():
    a, b = _four()[:2]
    with pytest.raises(ValueError, match="device"):
        implicit_rewards(a, b.to("meta"), beta=0.1)
    with pytest.raises(ValueError, match="device"):
        kl_estimators(a.to("meta"), b)
    logits, labels = _logits_and_labels()
    with pytest.raises(ValueError, match="device"):
        token_logps(logits, labels.to("meta"))
    with pytest.raises(ValueError, match="device"):
        sequence_kl(logits, logits.to("meta"), labels)
    logps, lengths, rewards = torch.tensor([[-3.0, -4.0]]), torch.tensor([[3, 4]]), torch.tensor([[1.0, 0.0]])
    with pytest.raises(ValueError, match="device"):
        rrhf_loss(logps, lengths, rewards.to("meta"))
    with pytest.raises(ValueError, match="device"):
        bandit_kl(torch.full((3,), 1 / 3), torch.full((3,), 1 / 3, device="meta"))


@pytest.mark.parametrize("beta", [np.float32(0.1), np.float64(0.1), np.int64(2), torch.tensor(0.1)])
def test_numpy_and_tensor_scalars_are_valid_hyperparameters(beta):
    args = _four()
    for fn in PAIRWISE:
        torch.testing.assert_close(fn(*args, beta=beta), fn(*args, beta=float(beta)))
    assert preference_metrics(*args, beta=beta) == pytest.approx(preference_metrics(*args, beta=float(beta)))


@pytest.mark.parametrize("beta", [True, "0.1", np.float32("nan"), None, torch.tensor([0.1, 0.2])])
def test_hyperparameters_that_are_not_numbers_are_named(beta):
    with pytest.raises((TypeError, ValueError), match="beta"):
        dpo_loss(*_four(), beta=beta)
