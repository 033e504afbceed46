"""Tests of the training loops (``course_lib.loop.training``) and held-out evaluation (``course_lib.loop.evaluation``).

Everything runs on CPU, single-threaded, on small slices of the toy data; only
``test_dpo_margin_keeps_growing_ipo_margin_settles`` trains for a few hundred steps.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from course_lib.loop.evaluation import evaluate_policy, make_evaluator, preference_accuracy
from course_lib.loop.training import History, train_preference, train_rrhf, train_sft
from course_lib.maths.losses import PAIRWISE_LOSSES, LossSpec, dpo_loss
from course_lib.toyworld.data import load_preferences, load_rankings, load_sft_corpus
from course_lib.toyworld.models import load_model_and_tokenizer

TRL_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
EVAL_KEYS = ("preference_accuracy", "kl", "kl_stderr", "kl_k1", "kl_k3", "reward", "reward_stderr")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world():
    """The reference model, its tokenizer and small slices of the toy data, loaded once."""
    reference, tokenizer = load_model_and_tokenizer()
    test_pairs = load_preferences("test")
    return {
        "reference": reference,
        "tokenizer": tokenizer,
        "all_pairs": load_preferences("train"),
        "pairs": load_preferences("train")[:200],
        "test_pairs": test_pairs[:64],
        "test_prompts": sorted({p["prompt"] for p in test_pairs}),
        "rankings": load_rankings("train")[:20],
    }


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    policy = copy.deepcopy(model)
    policy.requires_grad_(True)
    return policy


def _train(world, policy=None, **kwargs) -> History:
    """train_preference on the 200-pair slice with small defaults; keyword arguments override them."""
    settings = dict(
        loss="dpo",
        beta=0.5,
        steps=3,
        batch_size=8,
        lr=1e-3,
        seed=0,
        device="cpu",
        tokenizer=world["tokenizer"],
        progress=False,
    )
    settings.update(kwargs)
    pairs = settings.pop("pairs", world["pairs"])
    reference = settings.pop("reference", world["reference"])
    policy = policy if policy is not None else _copy(world["reference"])
    return train_preference(policy, reference, pairs, **settings)


@pytest.fixture(scope="module")
def perturbed(world):
    """A policy that differs from the reference (seeded Gaussian noise on every weight), so h != 0."""
    policy = _copy(world["reference"])
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return policy


@pytest.fixture(scope="module")
def trained(world):
    """A policy after 30 DPO steps (beta 0.5, lr 3e-3), for the evaluation tests."""
    policy = _copy(world["reference"])
    _train(world, policy, steps=30, batch_size=16, lr=3e-3)
    return policy


def _naive_logps(model, tokenizer, prompt: str, response: str) -> tuple[float, int]:
    """Summed log-prob of response words + <eos> given the prompt, one unpadded sequence at a time."""
    prompt_ids = tokenizer.convert_tokens_to_ids(prompt.split())
    response_ids = tokenizer.convert_tokens_to_ids(response.split()) + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # (T, V)
    total = sum(log_probs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(response_ids))
    return total, len(response_ids)


# ----------------------------------------------------------------------------- history
def test_history_has_one_entry_per_step_with_trl_keys(world):
    history = _train(world, steps=4)
    assert isinstance(history, History) and len(history) == 4
    assert history.column("step") == [1, 2, 3, 4]
    for entry in history:
        assert {"step", "loss", "margin", *TRL_KEYS} <= set(entry)
        assert all(isinstance(entry[k], float) and math.isfinite(entry[k]) for k in ("loss", "margin", *TRL_KEYS))
    assert not history.interrupted and history.evals == []
    with pytest.raises(KeyError, match="nonexistent"):
        history.column("nonexistent")


def test_step_one_policy_equals_reference(world):
    """At step 1 the policy is the reference: h = 0, so the DPO loss is log 2 and the margin is 0."""
    beta = 0.5
    entry = _train(world, steps=1, beta=beta)[0]
    assert entry["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert entry["margin"] == pytest.approx(0.0, abs=1e-5)
    assert entry["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert entry["rewards/rejected"] == pytest.approx(0.0, abs=1e-5)
    assert entry["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    ipo = _train(world, steps=1, beta=beta, loss="ipo")[0]
    assert ipo["loss"] == pytest.approx(1 / (2 * beta) ** 2, abs=1e-5)  # (0 - 1/(2 beta))^2
    assert ipo["margin"] == pytest.approx(0.0, abs=1e-5)


def test_step_one_accuracy_is_zero(world):
    """TRL's rewards/accuracies is strict (chosen reward > rejected reward), so it reads 0 when policy == reference."""
    for seed in range(3):
        assert _train(world, steps=1, seed=seed)[0]["rewards/accuracies"] == 0.0


def _evaluator(world, **kwargs):
    settings = dict(pairs=world["test_pairs"][:16], prompts=world["test_prompts"], n_samples=8, batch_size=8)
    return make_evaluator(world["reference"], world["tokenizer"], **{**settings, **kwargs})


def test_held_out_evaluation_every_n_steps(world):
    history = _train(world, steps=4, evaluate=_evaluator(world, every=2))
    assert [e["step"] for e in history.evals] == [0, 2, 4]
    for e in history.evals:
        assert set(EVAL_KEYS) <= set(e) and all(e[k] is not None for k in EVAL_KEYS)
    assert (
        history.evals[0]["preference_accuracy"] == 0.0 and history.evals[0]["kl"] == 0.0
    )  # step 0: policy == reference
    odd = _train(world, steps=4, evaluate=_evaluator(world, every=3, prompts=None))
    assert [e["step"] for e in odd.evals] == [0, 3, 4]  # every 3 steps, and the last step
    assert all(e["kl"] is None and e["preference_accuracy"] is not None for e in odd.evals)


def test_evaluate_callback_sees_the_policy_at_step_0_and_after_every_step(world):
    """The trainer's side of the callback: it calls evaluate(policy, step, steps) and keeps non-None results."""
    calls = []
    policy = _copy(world["reference"])

    def evaluate(seen_policy, step, steps):
        calls.append((seen_policy is policy, step, steps, seen_policy.training))
        return {"weight": seen_policy.transformer.wte.weight.sum().item()} if step % 2 == 0 else None

    history = _train(world, policy=policy, steps=5, evaluate=evaluate)
    assert calls == [(True, step, 5, False) for step in range(6)]  # in eval mode (no dropout), as trained
    assert [e["step"] for e in history.evals] == [0, 2, 4]
    assert history.evals[0]["weight"] != history.evals[-1]["weight"]  # evaluated as training moved it


def test_the_evaluator_borrows_the_reference_to_the_policys_device(world, monkeypatch):
    """On CUDA the trainer leaves the reference on the CPU; each evaluation brings it to the policy's device."""
    import course_lib.loop.evaluation as evaluation

    seen, real_borrowed = [], evaluation.borrowed

    @contextlib.contextmanager
    def watching(model, device):
        seen.append((model is world["reference"], device))
        with real_borrowed(model, device) as borrowed_model:
            yield borrowed_model

    monkeypatch.setattr(evaluation, "borrowed", watching)
    _train(world, steps=2, evaluate=_evaluator(world, every=2, prompts=None))
    assert seen == [(True, torch.device("cpu"))] * 2  # steps 0 and 2


def test_the_same_evaluator_serves_several_runs(world):
    evaluate = _evaluator(world, every=2, prompts=None)
    first, second = (_train(world, steps=2, evaluate=evaluate) for _ in range(2))
    assert first.evals == second.evals  # it holds no state of its own between runs


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(every=0), "every"), (dict(every=2.0), "every"), (dict(every=2, pairs=None, prompts=None), "pairs")],
)
def test_make_evaluator_rejects_bad_arguments(world, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _evaluator(world, **kwargs)


# ----------------------------------------------------------------------------- the reference and the forward pass
def test_reference_scored_once_before_training_and_never_changed(world):
    reference = world["reference"]
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    calls = {"reference": 0, "at_first_loss": None}

    def count(module, args, kwargs, output):
        calls["reference"] += 1

    def watching_dpo(pc, pr, rc, rr, *, beta):
        if calls["at_first_loss"] is None:
            calls["at_first_loss"] = calls["reference"]
        return dpo_loss(pc, pr, rc, rr, beta=beta)

    policy = _copy(reference)  # before the hook: deepcopy would copy the hook too
    handle = reference.register_forward_hook(count, with_kwargs=True)
    try:
        history = _train(world, policy, steps=5, lr=1e-2, loss=watching_dpo)
    finally:
        handle.remove()
    assert len(history) == 5
    assert calls["at_first_loss"] >= 1, "the reference must be scored before the first step"
    assert calls["reference"] == calls["at_first_loss"], "the reference was called during training"
    after = reference.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "the reference's parameters changed"
    assert all(p.grad is None for p in reference.parameters())


def test_one_policy_forward_per_step_covers_chosen_and_rejected(world):
    policy = _copy(world["reference"])
    batches = []

    def record(module, args, kwargs):
        batches.append(kwargs["input_ids"].shape[0] if "input_ids" in kwargs else args[0].shape[0])

    handle = policy.register_forward_pre_hook(record, with_kwargs=True)
    try:
        _train(world, policy, steps=4, batch_size=8)
    finally:
        handle.remove()
    assert batches == [16, 16, 16, 16]  # one pass per step, 2 x batch_size rows (chosen then rejected)


# ------------------------------------------------------------------ losses: names, callables, length normalisation
def test_learner_callable_gives_the_same_history_as_the_name(world):
    def my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta):
        h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
        return -F.logsigmoid(beta * h)

    def my_ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta):
        h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
        return (h - 1 / (2 * beta)) ** 2

    for name, mine, normalise in (("dpo", my_dpo_loss, False), ("ipo", my_ipo_loss, True)):
        by_name = _train(world, steps=5, loss=name)
        by_callable = _train(world, steps=5, loss=mine, length_normalize=normalise)
        assert len(by_name) == len(by_callable) == 5
        for a, b in zip(by_name, by_callable):
            assert a.keys() == b.keys()
            for key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (name, a["step"], key)


@pytest.mark.parametrize("name", sorted(PAIRWISE_LOSSES))
def test_length_normalize_defaults_to_the_registry(world, name):
    average = PAIRWISE_LOSSES[name].average_logps
    assert _train(world, loss=name) == _train(world, loss=name, length_normalize=average)
    assert _train(world, loss=name) != _train(world, loss=name, length_normalize=not average)


def test_a_reference_free_loss_runs_no_reference_pass(world):
    """A spec with needs_reference=False: the reference is never run, the loss gets None for its tensors, and the
    log-probs are averaged when the spec says so (a SimPO-like loss, declared here)."""
    reference, forward_calls, seen = _copy(world["reference"]), [], []
    reference.register_forward_hook(lambda *args: forward_calls.append(1))

    def free_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta):
        seen.append((ref_chosen_logps, ref_rejected_logps))
        return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps))

    spec = LossSpec("free", free_loss, average_logps=True, needs_reference=False)
    history = _train(world, loss=spec, steps=2, reference=reference)
    assert forward_calls == [] and seen == [(None, None)] * 2
    assert history.loss == "free" and history.length_normalize is True
    assert history[0]["rewards/chosen"] == pytest.approx(0.5 * history[0]["logps/chosen"])  # no reference: ref = 0
    assert _train(world, loss=spec, steps=2, reference=None) == history  # the reference may then be None
    with pytest.raises(ValueError, match="needs a reference"):
        _train(world, loss="dpo", steps=1, reference=None)


def test_margin_is_h_as_the_loss_sees_it_computed_by_hand(world, perturbed):
    """With a policy != reference: margin = mean h of averaged log-probs for IPO, of summed log-probs for DPO;
    rewards/margins is always beta x mean h of summed log-probs (TRL's convention)."""
    pairs, beta = world["pairs"][:12], 0.5
    h_sum, h_avg = [], []
    for p in pairs:
        pc, len_c = _naive_logps(perturbed, world["tokenizer"], p["prompt"], p["chosen"])
        pr, len_r = _naive_logps(perturbed, world["tokenizer"], p["prompt"], p["rejected"])
        rc, _ = _naive_logps(world["reference"], world["tokenizer"], p["prompt"], p["chosen"])
        rr, _ = _naive_logps(world["reference"], world["tokenizer"], p["prompt"], p["rejected"])
        h_sum.append((pc - rc) - (pr - rr))
        h_avg.append((pc - rc) / len_c - (pr - rr) / len_r)
    assert abs(statistics.mean(h_sum) - statistics.mean(h_avg)) > 0.1  # the two conventions differ here
    one_step = dict(pairs=pairs, batch_size=len(pairs), steps=1, lr=0.0, beta=beta)  # the whole slice is the batch
    ipo = _train(world, _copy(perturbed), loss="ipo", **one_step)[0]
    dpo = _train(world, _copy(perturbed), loss="dpo", **one_step)[0]
    assert ipo["margin"] == pytest.approx(statistics.mean(h_avg), abs=1e-4)
    assert dpo["margin"] == pytest.approx(statistics.mean(h_sum), abs=1e-4)
    for entry in (ipo, dpo):
        assert entry["rewards/margins"] == pytest.approx(beta * statistics.mean(h_sum), abs=1e-4)
    assert ipo["loss"] == pytest.approx(statistics.mean((h - 1 / (2 * beta)) ** 2 for h in h_avg), rel=1e-4)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_history_different_seed_differs(world):
    first_policy, second_policy = _copy(world["reference"]), _copy(world["reference"])
    first = _train(world, first_policy, steps=5, seed=3)
    second = _train(world, second_policy, steps=5, seed=3)
    assert list(first) == list(second)  # exact equality on CPU
    assert all(torch.equal(a, b) for a, b in zip(first_policy.parameters(), second_policy.parameters()))
    assert list(_train(world, steps=5, seed=4)) != list(first)


# ----------------------------------------------------------------------------- failure
def test_non_finite_loss_stops_training_naming_the_step(world):
    calls = {"n": 0}

    def nan_at_step_3(pc, pr, rc, rr, *, beta):
        calls["n"] += 1
        loss = dpo_loss(pc, pr, rc, rr, beta=beta)
        return loss * float("nan") if calls["n"] == 3 else loss

    policy = _copy(world["reference"])
    with pytest.raises(FloatingPointError, match=r"nan at step 3"):
        _train(world, policy, steps=6, loss=nan_at_step_3)
    assert calls["n"] == 3
    assert all(torch.isfinite(p).all() for p in policy.parameters())  # the NaN never reached the weights


def test_keyboard_interrupt_returns_history_so_far(world):
    calls = {"n": 0}

    def interrupted_at_step_4(pc, pr, rc, rr, *, beta):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return dpo_loss(pc, pr, rc, rr, beta=beta)

    policy = _copy(world["reference"])
    policy.train()
    history = _train(world, policy, steps=10, lr=1e-2, loss=interrupted_at_step_4)
    assert history.interrupted is True
    assert len(history) == 3 and history.column("step") == [1, 2, 3]
    assert policy.training is False
    assert all(torch.isfinite(p).all() and p.grad is None for p in policy.parameters())
    ids = world["tokenizer"].convert_tokens_to_ids(["this", "film", "is", "great"])
    with torch.no_grad():
        logits = policy(input_ids=torch.tensor([ids])).logits
    assert logits.shape[:2] == (1, len(ids)) and torch.isfinite(logits).all()


# ----------------------------------------------------------------------------- bad input
def test_unknown_loss_name_lists_the_choices(world):
    with pytest.raises(ValueError) as error:
        _train(world, loss="dpoo")
    assert all(name in str(error.value) for name in ("'dpo'", "'ipo'", "'hinge'", "'dpoo'"))


def test_empty_pairs_and_bad_steps(world):
    with pytest.raises(ValueError, match="pairs"):
        _train(world, pairs=[])
    for steps in (0, -1):
        with pytest.raises(ValueError, match="steps"):
            _train(world, steps=steps)


def test_word_outside_vocabulary_is_named(world):
    bad = dict(world["pairs"][0], chosen=" so moving zebra .")
    with pytest.raises(ValueError, match="zebra"):
        _train(world, pairs=[*world["pairs"][:5], bad])


# ----------------------------------------------------------------------------- RRHF and SFT
def test_train_rrhf_without_reference(world):
    policy = _copy(world["reference"])
    history = train_rrhf(
        policy,
        world["rankings"],
        steps=3,
        batch_size=4,
        lr=1e-3,
        sft_weight=0.5,
        seed=0,
        device="cpu",
        tokenizer=world["tokenizer"],
        progress=False,
    )
    assert len(history) == 3 and history.column("step") == [1, 2, 3] and history.evals == []
    for entry in history:
        assert {"loss", "rank_loss", "sft_loss", "logps/candidates", "logps/best", "ranking_accuracy"} <= set(entry)
        assert entry["loss"] == pytest.approx(entry["rank_loss"] + 0.5 * entry["sft_loss"], rel=1e-5)
        assert entry["sft_loss"] > 0 and entry["rank_loss"] >= 0 and 0 <= entry["ranking_accuracy"] <= 1
    assert not torch.equal(policy.transformer.wte.weight, world["reference"].transformer.wte.weight)  # it trained
    assert (history.loss, history.beta, history.steps, history.seed) == ("rrhf", None, 3, 0)


def test_the_history_records_what_produced_the_run(world):
    history = _train(world, loss="ipo", beta=0.25, steps=2, seed=7)
    recorded = (history.loss, history.beta, history.length_normalize, history.steps, history.seed)
    assert recorded == ("ipo", 0.25, True, 2, 7)


def test_train_rrhf_rejects_empty_rankings(world):
    with pytest.raises(ValueError, match="rankings"):
        train_rrhf(_copy(world["reference"]), [], steps=1, tokenizer=world["tokenizer"], progress=False)


def test_train_sft_lowers_the_loss(world):
    examples = [{"prompt": e["prompt"], "response": e["completion"]} for e in load_sft_corpus()[:16]]
    history = train_sft(
        _copy(world["reference"]),
        examples,
        steps=20,
        batch_size=16,
        lr=3e-3,
        seed=0,
        device="cpu",
        tokenizer=world["tokenizer"],
        progress=False,
    )
    losses = history.column("loss")
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert statistics.mean(losses[-5:]) < 0.8 * statistics.mean(losses[:5])


# ----------------------------------------------------------------------------- evaluation
def test_preference_accuracy_is_zero_for_the_reference_itself(world, trained):
    reference, tokenizer = world["reference"], world["tokenizer"]
    assert preference_accuracy(_copy(reference), reference, tokenizer, world["test_pairs"]) == 0.0
    assert preference_accuracy(trained, reference, tokenizer, world["test_pairs"]) > 0.5


def test_evaluate_policy_at_the_reference(world):
    reference = world["reference"]
    result = evaluate_policy(
        _copy(reference),
        reference,
        world["tokenizer"],
        pairs=world["test_pairs"],
        prompts=world["test_prompts"],
        n_samples=32,
    )
    assert result["preference_accuracy"] == 0.0
    assert result["kl"] == 0.0 and result["kl_stderr"] == 0.0  # exact per-token KL of identical models
    assert result["kl_k1"] == 0.0 and result["kl_k3"] == 0.0
    assert math.isfinite(result["reward"]) and result["reward_stderr"] > 0
    assert len(result["samples"]) > 0 and {"prompt", "response"} <= set(result["samples"][0])


def test_evaluate_policy_after_training(world, trained):
    result = evaluate_policy(
        trained,
        world["reference"],
        world["tokenizer"],
        pairs=world["test_pairs"],
        prompts=world["test_prompts"],
        n_samples=32,
    )
    assert set(EVAL_KEYS) <= set(result)
    assert result["kl"] > 0.01 and result["kl_stderr"] > 0
    assert result["kl_k1"] is not None and result["kl_k3"] > 0  # k3 is non-negative per sample
    assert math.isfinite(result["reward"]) and result["reward_stderr"] > 0
    again = evaluate_policy(
        trained, world["reference"], world["tokenizer"], prompts=world["test_prompts"], n_samples=32
    )
    assert again["kl"] == result["kl"] and again["reward"] == result["reward"]  # sampling is seeded
    assert again["preference_accuracy"] is None


def test_evaluate_policy_without_data_returns_nones(world):
    result = evaluate_policy(world["reference"], world["reference"], world["tokenizer"], pairs=None, prompts=None)
    assert {k: result[k] for k in EVAL_KEYS} == dict.fromkeys(EVAL_KEYS)
    no_reward = evaluate_policy(
        world["reference"],
        world["reference"],
        world["tokenizer"],
        prompts=world["test_prompts"][:4],
        n_samples=8,
        reward_fn=None,
    )
    assert no_reward["reward"] is None and no_reward["reward_stderr"] is None and no_reward["kl"] == 0.0


# ----------------------------------------------------------------------------- what it must show
def test_dpo_margin_keeps_growing_ipo_margin_settles(world):
    """On deterministic pairs DPO's margin has no finite optimum (it keeps growing); IPO's settles near 1/(2 beta).

    Measured (2000 pairs, beta 0.5, batch 32, seeds 0-2): DPO at lr 1e-3, 300 steps, margin means over
    50-step windows 2.0, 4.5, 6.7, 11.5, 11.5, 14.2 (last 50 / steps 51-100: 2.8-3.1). IPO at lr 3e-3
    plateaus at 0.68-0.72 of its target 1/(2 beta) = 1: pairs share words, so the squared loss trades them
    off and the mean margin settles below the target.
    """
    beta = 0.5
    dpo = _train(world, loss="dpo", beta=beta, steps=300, batch_size=32, lr=1e-3, pairs=world["all_pairs"]).column(
        "margin"
    )
    ipo = _train(world, loss="ipo", beta=beta, steps=200, batch_size=32, lr=3e-3, pairs=world["all_pairs"]).column(
        "margin"
    )
    dpo_early, dpo_late = statistics.mean(dpo[50:100]), statistics.mean(dpo[-50:])
    assert dpo_late > 1.5 * dpo_early, (dpo_early, dpo_late)
    target = 1 / (2 * beta)
    ratio = statistics.mean(ipo[-100:]) / target
    assert 0.5 < ratio < 1.05, ratio
    assert abs(statistics.mean(ipo[-50:]) - statistics.mean(ipo[-100:-50])) < 0.05 * target, (
        "IPO's margin is still growing"
    )
    assert dpo_late > 3 * target  # DPO went far past the margin IPO aims for
