"""pair_margins (summed and length-averaged h, by hand), make_evaluator's margin_pairs, and train_sweep."""

from __future__ import annotations

import copy

import pytest
import torch

from course_lib.loop.evaluation import evaluate_policy, make_evaluator, pair_margins
from course_lib.loop.sweep import train_sweep
from course_lib.loop.training import train_preference
from course_lib.toyworld.data import load_preferences
from course_lib.toyworld.models import load_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world():
    reference, tokenizer = load_model_and_tokenizer()
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    test_pairs = load_preferences("test")
    return {
        "reference": reference,
        "tokenizer": tokenizer,
        "policy": policy,
        "pairs": load_preferences("train")[:100],
        "test_pairs": test_pairs[:32],
        "test_prompts": sorted({p["prompt"] for p in test_pairs})[:8],
    }


def _logp(model, tokenizer, prompt, response):
    prompt_ids = tokenizer.convert_tokens_to_ids(prompt.split())
    response_ids = tokenizer.convert_tokens_to_ids(response.split()) + [tokenizer.eos_token_id]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + response_ids])).logits[0].double(), -1)
    return sum(log_probs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(response_ids)), len(response_ids)


def test_pair_margins_by_hand(world):
    pairs = world["pairs"][:6]
    summed = pair_margins(world["policy"], world["reference"], world["tokenizer"], pairs)
    averaged = pair_margins(world["policy"], world["reference"], world["tokenizer"], pairs, length_normalize=True)
    assert summed.shape == averaged.shape == (6,)
    for i, p in enumerate(pairs):
        pc, lc = _logp(world["policy"], world["tokenizer"], p["prompt"], p["chosen"])
        pr, lr = _logp(world["policy"], world["tokenizer"], p["prompt"], p["rejected"])
        rc, _ = _logp(world["reference"], world["tokenizer"], p["prompt"], p["chosen"])
        rr, _ = _logp(world["reference"], world["tokenizer"], p["prompt"], p["rejected"])
        assert summed[i].item() == pytest.approx((pc - rc) - (pr - rr), abs=1e-4)
        assert averaged[i].item() == pytest.approx((pc - rc) / lc - (pr - rr) / lr, abs=1e-4)
    assert not torch.allclose(summed, averaged)


def test_the_reference_has_zero_margins(world):
    margins = pair_margins(world["reference"], world["reference"], world["tokenizer"], world["pairs"][:8])
    assert torch.equal(margins, torch.zeros(8))


def test_evaluator_records_mean_margins_of_named_pairs(world):
    named = {"train": world["pairs"][:20], "held_out": world["test_pairs"]}
    evaluate = make_evaluator(
        world["reference"],
        world["tokenizer"],
        every=1,
        pairs=world["test_pairs"],
        margin_pairs=named,
        length_normalize=True,
    )
    result = evaluate(world["policy"], 1, 2)
    for name, some_pairs in named.items():
        expected = pair_margins(
            world["policy"], world["reference"], world["tokenizer"], some_pairs, length_normalize=True
        )
        assert result[f"margin/{name}"] == pytest.approx(expected.double().mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="margin_pairs"):
        make_evaluator(
            world["reference"], world["tokenizer"], every=1, pairs=world["test_pairs"], margin_pairs={"a": []}
        )


def test_train_sweep_one_point_per_config_as_one_run_each_and_the_reference_untouched(world):
    before = [p.detach().clone() for p in world["reference"].parameters()]
    one_run = {"steps": 2, "batch_size": 4, "seed": 0, "tokenizer": world["tokenizer"], "progress": False}
    points = train_sweep(
        world["reference"],
        world["tokenizer"],
        world["pairs"],
        [("dpo", 0.5), ("ipo", 1.0)],
        eval_pairs=world["test_pairs"],
        eval_prompts=world["test_prompts"],
        n_samples=8,
        progress=False,
        steps=2,
        batch_size=4,
        seed=0,
    )
    assert [(p["loss"], p["beta"]) for p in points] == [("dpo", 0.5), ("ipo", 1.0)]
    for point in points:
        assert len(point["history"]) == 2 and point["history"].beta == point["beta"]
        assert point["kl"] > 0 and point["reward"] is not None and 0 <= point["preference_accuracy"] <= 1
    assert all(torch.equal(a, b) for a, b in zip(before, world["reference"].parameters()))
    for point in points:  # what one train_preference run and evaluate_policy give, up to round-off
        policy = copy.deepcopy(world["reference"])
        history = train_preference(
            policy, world["reference"], world["pairs"], loss=point["loss"], beta=point["beta"], **one_run
        )
        expected = evaluate_policy(
            policy,
            world["reference"],
            world["tokenizer"],
            pairs=world["test_pairs"],
            prompts=world["test_prompts"],
            n_samples=8,
            seed=0,
            with_samples=False,
        )
        for got, want in zip(point["history"], history, strict=True):
            assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
        assert {k: point[k] for k in expected} == pytest.approx(expected, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize(
    "configs, match",
    [
        ([], "non-empty list"),
        ([("dpo",)], r"configs\[0\] must be a \(loss, beta\) pair"),
        ([("dpo", 0.0)], "beta must be a number > 0"),
        ([(1, 0.1)], "the loss must be a name"),
    ],
)
def test_train_sweep_rejects_bad_configs(world, configs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        train_sweep(
            world["reference"],
            world["tokenizer"],
            world["pairs"],
            configs,
            eval_pairs=world["test_pairs"],
            eval_prompts=world["test_prompts"],
        )
