"""The maths under bad input and extreme floats: each bad argument is refused with the error type and a
message naming it; the edge cases that must work (an overflowing margin, -inf on both sides of a KL, inf
logits at an unscored position) give the exact answer, with a finite gradient."""

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

NAMES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
WITH_BETA = {
    "dpo_loss": dpo_loss,
    "ipo_loss": ipo_loss,
    "hinge_loss": hinge_loss,
    "preference_metrics": preference_metrics,
}
FOUR_LOGPS = {**WITH_BETA, "log_ratio_margin": log_ratio_margin}
NAN, INF = float("nan"), float("inf")
VE, TE = ValueError, TypeError


def _four(b: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(b, generator=generator) for _ in range(4)]


def _call(fn, logps, **kwargs):
    return fn(*logps, **kwargs) if fn is log_ratio_margin else fn(*logps, **{"beta": 0.1, **kwargs})


def _logits_and_labels(dtype=torch.float32, seed: int = 0):
    """(2, 6, 5) logits; row 0: prompt of 2 tokens, 3 scored, 1 padding; row 1: prompt 1, 4 scored, 1 padding."""
    logits = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(seed)).to(dtype)
    labels = torch.tensor(
        [[IGNORE_INDEX, IGNORE_INDEX, 4, 0, 2, IGNORE_INDEX], [IGNORE_INDEX, 2, 3, 4, 0, IGNORE_INDEX]]
    )
    return logits, labels


# ----------------------------------------------------------------------------- the four log-prob tensors
SPOILS = {  # how one log-prob tensor is spoiled: (spoil, error, what the message says after the tensor's name)
    "a list": (lambda t: t.tolist(), TypeError, r".*Tensor"),
    "integer": (lambda t: torch.tensor([1, 2, 3]), TypeError, r".*float"),
    "2-D": (lambda t: t.reshape(3, 1), ValueError, r".*shape"),
    "shorter": (lambda t: t[:2], ValueError, r"\(2,\)"),
    "on another device": (lambda t: t.to("meta"), ValueError, r" on meta"),
}


@pytest.mark.parametrize("spoil", SPOILS)
@pytest.mark.parametrize("index", range(4), ids=NAMES)
@pytest.mark.parametrize("fn", FOUR_LOGPS.values(), ids=FOUR_LOGPS)
def test_a_bad_log_prob_tensor_is_named(fn, index, spoil):
    change, error, said = SPOILS[spoil]
    logps = _four()
    logps[index] = change(logps[index])
    with pytest.raises(error, match=NAMES[index] + said):
        _call(fn, logps)


@pytest.mark.parametrize("fn", FOUR_LOGPS.values(), ids=FOUR_LOGPS)
def test_inputs_are_not_mutated(fn):
    logps = _four()
    inputs = [t.clone() for t in logps]
    _call(fn, inputs)
    assert all(map(torch.equal, inputs, logps))


BAD_BETAS = [*[(v, ValueError) for v in (0, -1.0, NAN, INF, np.float32("nan"))],
             *[(v, TypeError) for v in ("0.1", None, True, torch.tensor([0.1, 0.2]))]]  # fmt: skip


@pytest.mark.parametrize("beta, error", BAD_BETAS, ids=[repr(b) for b, _ in BAD_BETAS])
@pytest.mark.parametrize("fn", WITH_BETA.values(), ids=WITH_BETA)
def test_a_bad_beta_is_named(fn, beta, error):
    with pytest.raises(error, match="beta"):
        fn(*_four(), beta=beta)


@pytest.mark.parametrize("beta", [np.float32(0.1), np.float64(0.1), np.int64(2), torch.tensor(0.1)], ids=repr)
def test_numpy_and_tensor_scalars_are_valid_hyperparameters(beta):
    logps = _four()
    for fn in (dpo_loss, ipo_loss, hinge_loss):
        torch.testing.assert_close(fn(*logps, beta=beta), fn(*logps, beta=float(beta)))
    assert preference_metrics(*logps, beta=beta) == pytest.approx(preference_metrics(*logps, beta=float(beta)))


# ----------------------------------------------------------------------------- every other bad argument
def _rrhf(logps=((-3.0, -4.0, -5.0),), lengths=((3, 4, 5),), rewards=((1.0, 0.0, 2.0),), fn=rrhf_loss, **kwargs):
    as_tensor = lambda x: x if isinstance(x, torch.Tensor) else torch.tensor(x)  # noqa: E731
    return lambda: fn(as_tensor(logps), as_tensor(lengths), as_tensor(rewards), **kwargs)


def _scores(candidate_logps, candidate_lengths, candidate_rewards):
    return rrhf_scores(candidate_logps, candidate_lengths)


LOGITS, LABELS = _logits_and_labels()
UNSCORED = torch.full_like(LABELS, IGNORE_INDEX)
THIRDS = torch.full((3,), 1 / 3)
BANDIT = {"loss": "ipo", "beta": 0.1, "steps": 2}


def case(name, fn, error, pattern, **marks):
    return pytest.param(fn, error, pattern, id=name, **marks)


# fmt: off
MATHS_FAULTS = [
    *[case(f"offset={v}", lambda v=v: dpo_loss(*_four(), offset=v), ValueError, "offset") for v in (NAN, INF, -INF)],
    *[case(f"label_smoothing={v}", lambda v=v: dpo_loss(*_four(), label_smoothing=v), ValueError, "label_smoothing")
      for v in (0.5, -0.1, NAN)],
    case("preference_metrics empty", lambda: preference_metrics(*[torch.zeros(0)] * 4, beta=0.1), ValueError, "empty"),
    case("implicit_rewards devices", lambda: implicit_rewards(THIRDS, THIRDS.to("meta"), beta=1), ValueError, "device"),
    case("kl_estimators devices", lambda: kl_estimators(THIRDS.to("meta"), THIRDS), ValueError, "device"),
    case("bandit_kl devices", lambda: bandit_kl(THIRDS, THIRDS.to("meta")), ValueError, "device"),
    case("token_logps labels on meta", lambda: token_logps(LOGITS, LABELS.to("meta")), ValueError, "device"),
    case("token_logps 2-D logits", lambda: token_logps(LOGITS[0], LABELS), ValueError, "logits"),
    case("token_logps float labels", lambda: token_logps(LOGITS, LABELS.float()), TypeError, "labels"),
    case("token_logps labels shape", lambda: token_logps(LOGITS, LABELS[:, :3]), ValueError, "labels"),
    case("token_logps label outside", lambda: token_logps(LOGITS, LABELS.clamp(min=0) + 5), ValueError, "vocabulary"),
    case("sequence_logps average, nothing scored", lambda: sequence_logps(LOGITS, UNSCORED, average=True),
         ValueError, "no scored token"),
    case("sequence_logps vocabulary 0", lambda: sequence_logps(torch.zeros(2, 6, 0), UNSCORED), ValueError, "logits"),
    case("sequence_kl shapes", lambda: sequence_kl(LOGITS, LOGITS[:1], LABELS), ValueError, "ref_logits"),
    case("sequence_kl devices", lambda: sequence_kl(LOGITS, LOGITS.to("meta"), LABELS), ValueError, "device"),
    *[case(f"{name} NaN reward", _rrhf(rewards=[[1.0, NAN, 0.0]], fn=fn), ValueError, r"candidate_rewards .*NaN")
      for name, fn in (("rrhf_loss", rrhf_loss), ("rrhf_loss_terms", rrhf_loss_terms))],
    *[case(f"{name} lengths {bad}", _rrhf(lengths=[bad], fn=fn), ValueError, "candidate_lengths")
      for bad in ([3, 0, 5], [3, -1, 5], [3.0, NAN, 5.0], [3.0, INF, 5.0])
      for name, fn in (("rrhf_loss", rrhf_loss), ("rrhf_scores", _scores))],
    *[case(f"rrhf_loss {key}={value}", _rrhf(**{key: value}), ValueError, key)
      for key, value in (("length_penalty", NAN), ("length_penalty", INF), ("sft_weight", NAN), ("sft_weight", INF),
                         ("sft_weight", -1.0))],
    case("rrhf_loss K = 1", _rrhf([[-3.0]], [[3]], [[1.0]]), ValueError, "K"),
    case("rrhf_loss shapes", _rrhf(lengths=[[3, 4]]), ValueError, "shape"),
    case("rrhf_loss devices", _rrhf(rewards=torch.tensor([[1.0, 0.0, 2.0]], device="meta")), ValueError, "device"),
    case("rrhf_loss integer logps", _rrhf(logps=[[-3, -4, -5]]), TypeError, "candidate_logps"),
    case("rrhf_loss complex lengths", _rrhf(lengths=torch.ones(1, 3, dtype=torch.complex64)), TypeError,
         "candidate_lengths"),
    case("rrhf_loss bool rewards", _rrhf(rewards=[[True, False, True]]), TypeError, "candidate_rewards"),
    case("rrhf_loss complex rewards", _rrhf(rewards=torch.ones(1, 3, dtype=torch.complex64)), TypeError,
         "candidate_rewards"),
    case("rrhf_scores lengths shape", lambda: rrhf_scores(torch.zeros(1, 2), torch.ones(1, 3)), ValueError,
         "candidate_lengths"),
    case("rrhf_scores a list", lambda: rrhf_scores([[-3.0, -4.0]], torch.ones(1, 2)), TypeError, "candidate_logps"),
    *[case(f"bandit ref_probs {p}", lambda p=p: ipo_bandit_optimum([(0, 1)], beta=0.1, ref_probs=p), ValueError,
           "ref_probs") for p in ([0.5, NAN], [1.5, -0.5], [0.5, 0.6])],
    case("train_bandit ref_probs NaN", lambda: train_bandit([(0, 1)], loss="ipo", beta=0.1, steps=1,
                                                            ref_probs=[NAN, 1.0]), ValueError, "ref_probs"),
    *[case(f"bandit preferences {p!r}", lambda p=p: ipo_bandit_optimum(p, beta=0.1), error, "preferences")
      for p, error in (([(0, 1.7)], TE), ([(0.5, 1)], TE), ([(True, 0)], TE), ([(0, 0)], VE), ([(-1, 1)], VE),
                       ([], VE))],
    case("bandit preferences 'ab'", lambda: ipo_bandit_optimum("ab", beta=0.1), TypeError, "preferences"),
    case("bandit disconnected", lambda: ipo_bandit_optimum([(0, 1), (2, 3)], beta=0.1), ValueError, "connect"),
    *[case(f"bandit_kl probs {p}", lambda p=p: bandit_kl(torch.tensor(p)), ValueError, "probs")
      for p in ([0.5, 0.6, 0.1], [1.2, -0.2, 0.0], [NAN, 0.5, 0.5], [[0.3, 0.3, 0.3]], [1.0])],
    *[case(f"train_bandit {key}={value!r}", lambda kw={key: value}: train_bandit([(0, 1)], **BANDIT | kw), error, key)
      for key, value, error in (("lr", NAN, ValueError), ("steps", 0, ValueError), ("batch_size", 0, ValueError),
                                ("beta", -1.0, ValueError), ("steps", "10", TypeError), ("steps", 2.5, TypeError))],
]
# fmt: on


@pytest.mark.parametrize("call, error, pattern", MATHS_FAULTS)
def test_a_bad_argument_is_named(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# ----------------------------------------------------------------------------- edge cases that must work
@pytest.mark.parametrize("bad", [INF, -INF, NAN])
@pytest.mark.parametrize("where", ["prompt", "padding"])
@pytest.mark.parametrize("average", [False, True])
def test_no_gradient_flows_through_unscored_positions(bad, where, average):
    logits, labels = _logits_and_labels()
    clean = sequence_logps(logits, labels, average=average)
    position = 0 if where == "prompt" else 4  # logits at t score labels[:, t+1]: a prompt token, the padding at 5
    broken = logits.clone()
    broken[0, position, 2] = bad
    broken.requires_grad_(True)
    value = sequence_logps(broken, labels, average=average)
    assert torch.equal(value, clean)
    value.sum().backward()
    assert torch.isfinite(broken.grad).all()
    assert (broken.grad[0, position] == 0).all() and (broken.grad[:, -1] == 0).all()


@pytest.mark.parametrize("bad", [INF, NAN])
def test_sequence_kl_no_gradient_through_unscored_positions(bad):
    logits, labels = _logits_and_labels()
    ref = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    clean = sequence_kl(logits, ref, labels)
    broken, broken_ref = logits.clone(), ref.clone()
    broken[0, 0, 1] = bad
    broken_ref[0, 4, 3] = bad
    broken.requires_grad_(True)
    value = sequence_kl(broken, broken_ref, labels)
    torch.testing.assert_close(value, clean)
    value.sum().backward()
    assert torch.isfinite(broken.grad).all() and (broken.grad[0, 0] == 0).all()


def test_sequence_kl_where_models_put_minus_inf_on_a_token():
    logits, labels = _logits_and_labels()
    ref = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    policy, both = logits.clone(), ref.clone()
    policy[:, :, 4] = both[:, :, 4] = -INF  # token 4 impossible under both models: a finite KL
    torch.testing.assert_close(sequence_kl(policy, both, labels), sequence_kl(policy[..., :4], ref[..., :4], labels))
    only_ref = logits.clone()
    only_ref[0, 2, 1] = -INF  # position 2 of row 0 is scored: only the reference rules it out
    assert sequence_kl(logits, only_ref, labels)[0].item() == math.inf


def _h(h: float, dtype=torch.float32):
    """Four (1,) log-prob tensors whose margin is ``h``."""
    zeros = torch.zeros(1, dtype=dtype)
    return torch.tensor([h], dtype=dtype), zeros, zeros.clone(), zeros.clone()


@pytest.mark.parametrize(
    "h, beta, dtype",
    [(6e4, 2.0, torch.float16), (INF, 0.1, torch.float32), (3e38, 10.0, torch.float32), (1e38, 1e3, torch.bfloat16)],
)
def test_losses_where_beta_h_overflows(h, beta, dtype):
    pc, pr, rc, rr = _h(h, dtype)
    pc.requires_grad_(True)
    loss = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert loss.item() == 0.0
    loss.sum().backward()
    assert pc.grad.item() == 0.0
    assert hinge_loss(pc, pr, rc, rr, beta=beta).item() == 0.0 and ipo_loss(pc, pr, rc, rr, beta=beta).item() > 0


EXACT = {  # edge cases that must work: the call, and its exact answer
    "cDPO at h=+inf": (lambda: dpo_loss(*_h(INF), beta=0.1, label_smoothing=0.1), [INF]),  # eps * inf, not NaN
    "dpo_loss at h=-inf": (lambda: dpo_loss(*_h(-INF), beta=0.1), [INF]),
    "dpo_loss at h=-1e4": (lambda: dpo_loss(*_h(-1e4), beta=1.0), [1e4]),  # softplus: no log(sigmoid) underflow
    "rrhf_loss_terms, rewards -inf and +inf": (  # the +inf candidate is the best, -inf the worst
        lambda: torch.cat(rrhf_loss_terms(torch.tensor([[-3.0, -8.0]]), torch.ones(1, 2), torch.tensor([[-INF, INF]]))),
        [5.0, 8.0],
    ),
    "bandit_kl, one-hot and uniform": (
        lambda: bandit_kl(torch.tensor([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3]])),
        [math.log(3), 0.0],
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", EXACT)
def test_an_edge_case_gives_the_exact_answer(name):
    call, expected = EXACT[name]
    torch.testing.assert_close(call().double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
