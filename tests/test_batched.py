"""train_preference_batched against N sequential train_preference runs: histories, weights, evaluations, errors.

Tolerance (fp32): every history value within 1e-4 (absolute, or relative for larger values), and every weight
within 0.05 * lr of the sequential run's. One exception: GPT-2's key bias (the middle third of each
``c_attn.bias``) has a zero gradient in exact arithmetic (softmax is shift-invariant), so its gradient is
round-off, which Adam scales up to steps of size lr; it is held to lr * steps, and changes no log-prob.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from course_lib.loop.batched import train_preference_batched
from course_lib.loop.training import train_preference
from course_lib.maths.losses import LossSpec
from course_lib.toyworld.data import load_preferences
from course_lib.toyworld.models import load_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = {"steps": 5, "batch_size": 8, "lr": 1e-2, "seed": 1, "device": "cpu", "progress": False}


def _reference_free(pc, pr, rc, rr, *, beta):
    """A SimPO-like loss on the policy's own (averaged) log-probs: the reference tensors are None."""
    assert rc is None and rr is None
    return F.softplus(-beta * (pc - pr))


CONFIGS = [
    ("dpo", 0.5),
    ("ipo", 1.0),
    ("hinge", 0.3),
    (LossSpec("free", _reference_free, average_logps=True, needs_reference=False), 2.0),
]


@pytest.fixture(scope="module")
def world():
    reference, tokenizer = load_model_and_tokenizer()
    return {"reference": reference, "tokenizer": tokenizer, "pairs": load_preferences("train")[:200]}


def _key_bias(name: str, param: torch.Tensor) -> torch.Tensor:
    """True where ``param`` is a key bias: the middle third of ``c_attn.bias``."""
    mask = torch.zeros_like(param, dtype=torch.bool)
    if name.endswith("c_attn.bias"):
        third = param.shape[0] // 3
        mask[third : 2 * third] = True
    return mask


def test_equals_sequential_runs(world):
    reference, kw = world["reference"], {"tokenizer": world["tokenizer"], **SETTINGS}
    before = [p.detach().clone() for p in reference.parameters()]
    batched = [copy.deepcopy(reference) for _ in CONFIGS]
    histories = train_preference_batched(batched, reference, world["pairs"], CONFIGS, **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, reference.parameters()))
    lr, steps = SETTINGS["lr"], SETTINGS["steps"]
    for (loss, beta), policy, history in zip(CONFIGS, batched, histories):
        alone = copy.deepcopy(reference)
        expected = train_preference(alone, reference, world["pairs"], loss=loss, beta=beta, **kw)
        assert (history.loss, history.beta, history.length_normalize, history.steps, history.seed) == (
            expected.loss,
            expected.beta,
            expected.length_normalize,
            expected.steps,
            expected.seed,
        )
        assert len(history) == len(expected) == steps
        for got, want in zip(history, expected):
            assert got.keys() == want.keys()
            assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
        moved = 0.0
        for (name, p), q, start in zip(policy.named_parameters(), alone.parameters(), before):
            key = _key_bias(name, p)
            assert torch.allclose(p[~key], q[~key], rtol=0, atol=0.05 * lr), name
            assert torch.allclose(p[key], q[key], rtol=0, atol=lr * steps), name
            moved = max(moved, (q - start).abs().max().item())
        assert moved > 20 * 0.05 * lr  # the runs went somewhere: the tolerance is far below the distance moved


def test_each_policy_is_evaluated_with_its_own_weights(world):
    reference = world["reference"]
    seen = []

    def evaluate(policy, step, steps):
        seen.append(step)
        return {"norm": sum(p.double().square().sum() for p in policy.parameters()).item()} if step == steps else None

    policies = [copy.deepcopy(reference) for _ in range(2)]
    configs = [("dpo", 0.5), ("ipo", 0.5)]
    histories = train_preference_batched(
        policies, reference, world["pairs"], configs, tokenizer=world["tokenizer"], evaluate=evaluate, **SETTINGS
    )
    assert seen == [step for step in range(SETTINGS["steps"] + 1) for _ in policies]
    for policy, history in zip(policies, histories):
        norm = sum(p.double().square().sum() for p in policy.parameters()).item()
        assert history.evals == [{"step": SETTINGS["steps"], "norm": pytest.approx(norm, rel=1e-12)}]
    assert histories[0].evals[0]["norm"] != histories[1].evals[0]["norm"]


def test_one_thread_while_training_and_no_reference_for_a_reference_free_loss(world):
    threads_seen = []

    def evaluate(policy, step, steps):
        threads_seen.append(torch.get_num_threads())

    policy, kw = copy.deepcopy(world["reference"]), {**SETTINGS, "tokenizer": world["tokenizer"], "evaluate": evaluate}
    torch.set_num_threads(2)
    try:
        (history,) = train_preference_batched([policy], None, world["pairs"], CONFIGS[-1:], **kw)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert len(history) == SETTINGS["steps"] and set(threads_seen) == {1}


@pytest.mark.parametrize(
    "n_policies, configs, match",
    [
        (0, [], "policies must be a non-empty list"),
        (2, [("dpo", 0.5)], "one \\(loss, beta\\) per policy"),
        (1, [("nope", 0.5)], "loss must be one of"),
        (1, [("dpo", float("nan"))], "beta"),
    ],
)
def test_rejects_bad_configs(world, n_policies, configs, match):
    policies = [copy.deepcopy(world["reference"]) for _ in range(n_policies)]
    with pytest.raises((ValueError, TypeError), match=match):
        train_preference_batched(policies, world["reference"], world["pairs"], configs, tokenizer=world["tokenizer"])


def test_a_loss_that_needs_a_reference_refuses_none(world):
    with pytest.raises(ValueError, match="reference is None"):
        train_preference_batched([copy.deepcopy(world["reference"])], None, world["pairs"], [("dpo", 0.1)])
