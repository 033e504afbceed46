"""The training loops and the toy world's helpers under faults (issue 12).

Items covered: 1 (no NaN weights from inf logits at unscored positions, end to end), 2 (a NaN gradient
with a finite loss stops *before* the optimiser step, naming the right step, weights untouched), 5 (the
history survives a non-finite loss), 16 (responses longer than the model's context), 19 (bad library
calls: batch sizes, missing fields, frozen policies, losses without a gradient, ``train_sft`` on the SFT
corpus, sampling arguments, prompts that are not strings).
"""

from __future__ import annotations

import copy

import pytest
import torch

from course_lib.loop.training import TrainingDiverged, train_preference, train_rrhf, train_sft
from course_lib.maths.losses import dpo_loss
from course_lib.toyworld.batching import encode_prompt_response
from course_lib.toyworld.data import load_preferences, load_rankings, load_sft_corpus
from course_lib.toyworld.models import load_model_and_tokenizer
from course_lib.toyworld.sampling import sample_responses

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world():
    reference, tokenizer = load_model_and_tokenizer()
    return {
        "reference": reference,
        "tokenizer": tokenizer,
        "pairs": load_preferences("train")[:32],
        "rankings": load_rankings("train")[:8],
    }


def _copy(model):
    policy = copy.deepcopy(model)
    policy.requires_grad_(True)
    return policy


def _train(world, policy=None, **kwargs):
    settings = dict(loss="dpo", beta=0.5, steps=3, batch_size=4, lr=1e-2, device="cpu", progress=False)
    settings.update(kwargs)
    pairs = settings.pop("pairs", world["pairs"])
    policy = policy if policy is not None else _copy(world["reference"])
    return train_preference(policy, world["reference"], pairs, tokenizer=world["tokenizer"], **settings)


def _weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ----------------------------------------------------------------------------- item 2
def test_nan_gradient_with_a_finite_loss_stops_before_the_step(world):
    policy = _copy(world["reference"])
    seen = {"calls": 0}

    def nan_gradient_at_step_3(pc, pr, rc, rr, *, beta):
        seen["calls"] += 1
        if seen["calls"] == 3:
            seen["weights"] = _weights(policy)  # the weights after step 2
            pc.register_hook(lambda grad: grad * float("nan"))  # the loss stays finite, its gradient does not
        return dpo_loss(pc, pr, rc, rr, beta=beta)

    with pytest.raises(TrainingDiverged, match=r"gradient became non-finite at step 3") as caught:
        _train(world, policy, loss=nan_gradient_at_step_3, steps=5)
    after = _weights(policy)
    assert all(torch.isfinite(w).all() for w in after.values())
    assert all(torch.equal(after[name], seen["weights"][name]) for name in after)  # the step was not taken
    assert caught.value.step == 3
    assert [entry["step"] for entry in caught.value.history] == [1, 2]
    assert all(p.grad is None for p in policy.parameters())


def test_inf_gradient_is_caught_too(world):
    seen = {"calls": 0}

    def inf_gradient_at_step_2(pc, pr, rc, rr, *, beta):
        seen["calls"] += 1
        if seen["calls"] == 2:
            pc.register_hook(lambda grad: grad / 0.0)
        return dpo_loss(pc, pr, rc, rr, beta=beta)

    with pytest.raises(TrainingDiverged, match=r"at step 2 \(in "):
        _train(world, loss=inf_gradient_at_step_2)


# ----------------------------------------------------------------------------- item 5
def test_a_non_finite_loss_keeps_the_history(world):
    seen = {"calls": 0}

    def nan_at_step_4(pc, pr, rc, rr, *, beta):
        seen["calls"] += 1
        loss = dpo_loss(pc, pr, rc, rr, beta=beta)
        return loss * float("nan") if seen["calls"] == 4 else loss

    with pytest.raises(FloatingPointError, match=r"nan at step 4") as caught:
        _train(world, loss=nan_at_step_4, steps=6)
    assert isinstance(caught.value, TrainingDiverged) and caught.value.step == 4
    assert [entry["step"] for entry in caught.value.history] == [1, 2, 3]
    assert all(entry["loss"] > 0 for entry in caught.value.history)


def test_any_other_failure_inside_the_loop_keeps_the_history(world):
    seen = {"calls": 0}

    def fails_at_step_3(pc, pr, rc, rr, *, beta):
        seen["calls"] += 1
        if seen["calls"] == 3:
            raise RuntimeError("out of memory (simulated)")
        return dpo_loss(pc, pr, rc, rr, beta=beta)

    with pytest.raises(RuntimeError, match="simulated") as caught:
        _train(world, loss=fails_at_step_3)
    assert [entry["step"] for entry in caught.value.history] == [1, 2]


# ----------------------------------------------------------------------------- item 1, end to end
class _InfAtPadding(torch.nn.Module):
    """Wraps a causal LM: its logits are +inf at every padding position (where attention_mask is 0)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        padding = (attention_mask == 0).unsqueeze(-1)
        # an addition passes the gradient through unchanged (masked_fill would zero it and hide the NaN)
        out.logits = out.logits + torch.where(padding, float("inf"), 0.0)
        return out


def test_inf_logits_at_padding_leave_the_weights_finite(world):
    policy = _InfAtPadding(_copy(world["reference"]))
    reference = _InfAtPadding(world["reference"])
    pairs = world["pairs"]
    batch = encode_prompt_response(world["tokenizer"], [p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    assert (batch["attention_mask"] == 0).any()  # some rows are padded, so some logits are inf
    history = train_preference(
        policy, reference, pairs, tokenizer=world["tokenizer"], steps=3, batch_size=8, lr=1e-2, device="cpu",
        progress=False,
    )  # fmt: skip
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(e["loss"])) for e in history)
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(policy.parameters(), world["reference"].parameters()))


# ----------------------------------------------------------------------------- item 19: library calls
@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_must_be_positive(world, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        _train(world, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        train_rrhf(_copy(world["reference"]), world["rankings"], batch_size=batch_size, tokenizer=world["tokenizer"])


@pytest.mark.parametrize("batch_size", [2.5, "8", True])
def test_batch_size_must_be_a_whole_number(world, batch_size):
    with pytest.raises(TypeError, match="batch_size"):
        _train(world, batch_size=batch_size)


@pytest.mark.parametrize("lr", [-1.0, float("nan"), float("inf")])
def test_lr_must_be_finite_and_not_negative(world, lr):
    with pytest.raises(ValueError, match="lr"):
        _train(world, lr=lr)


def test_a_pair_without_chosen_is_named(world):
    pairs = [dict(p) for p in world["pairs"][:4]]
    del pairs[2]["chosen"]
    with pytest.raises(ValueError, match=r"pairs\[2\] has no 'chosen'"):
        _train(world, pairs=pairs)
    rankings = [dict(r) for r in world["rankings"][:4]]
    del rankings[1]["rewards"]
    with pytest.raises(ValueError, match=r"rankings\[1\] has no 'rewards'"):
        train_rrhf(_copy(world["reference"]), rankings, tokenizer=world["tokenizer"])


def test_a_frozen_policy_is_refused(world):
    frozen = copy.deepcopy(world["reference"]).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        _train(world, frozen)


def test_a_loss_without_a_gradient_is_named(world):
    def detached(pc, pr, rc, rr, *, beta):
        return dpo_loss(pc.detach(), pr.detach(), rc, rr, beta=beta)

    with pytest.raises(TypeError, match="does not require grad"):
        _train(world, loss=detached)


@pytest.mark.parametrize("bad", [7, None, ["the", "movie"], b"the movie was"])
def test_prompts_that_are_not_strings_are_named(world, bad):
    pairs = [dict(p) for p in world["pairs"][:4]]
    pairs[3]["prompt"] = bad
    with pytest.raises((TypeError, ValueError), match="prompt 3"):
        _train(world, pairs=pairs)


def test_responses_that_are_not_strings_are_named(world):
    pairs = [dict(p) for p in world["pairs"][:4]]
    pairs[1]["rejected"] = 3.5
    with pytest.raises(TypeError, match="response 1 must be a string"):
        _train(world, pairs=pairs)


def test_train_sft_takes_the_sft_corpus(world):
    corpus = load_sft_corpus()[:16]
    assert "completion" in corpus[0]  # the loader's key (TRL's prompt-completion form)
    history = train_sft(_copy(world["reference"]), corpus, steps=2, batch_size=4, tokenizer=world["tokenizer"],
                        device="cpu", progress=False)  # fmt: skip
    assert len(history) == 2 and history[0]["loss"] > 0
    with pytest.raises(ValueError, match=r"examples\[0\] has neither 'completion' nor 'response'"):
        train_sft(_copy(world["reference"]), [{"prompt": "the movie was"}], tokenizer=world["tokenizer"])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_sampling_arguments_are_named(world, kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        sample_responses(world["reference"], world["tokenizer"], ["the movie was"], **kwargs)


def test_sampling_a_string_instead_of_a_list_is_named(world):
    with pytest.raises(TypeError, match="prompts must be a list"):
        sample_responses(world["reference"], world["tokenizer"], "the movie was")


def test_conversation_messages_without_content_are_named(world):
    with pytest.raises(ValueError, match=r"prompt 0: message 1 needs a string 'content'"):
        encode_prompt_response(world["tokenizer"], [[{"role": "user", "content": "hi"}, {"role": "user"}]], ["great"])


# ----------------------------------------------------------------------------- item 16
def test_pairs_longer_than_the_context_are_named_with_their_length(world):
    limit = world["reference"].config.n_positions
    pairs = [dict(p) for p in world["pairs"][:4]]
    pairs[2]["rejected"] = " great" * limit
    with pytest.raises(ValueError, match=rf"pairs\[2\] \(prompt \+ rejected\) is \d+ tokens long .* allows {limit}"):
        _train(world, pairs=pairs)
    rankings = [dict(r, responses=list(r["responses"])) for r in world["rankings"][:3]]
    rankings[1]["responses"][2] = " fun" * limit
    with pytest.raises(ValueError, match=r"rankings\[1\] \(prompt \+ responses\[2\]\)"):
        train_rrhf(_copy(world["reference"]), rankings, tokenizer=world["tokenizer"], device="cpu", progress=False)
