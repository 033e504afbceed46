"""SimPO (Meng et al. 2024, Eq. 6): one registry entry, and the library trains it with no reference pass."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.loop.training import train_preference
from course_lib.maths.losses import PAIRWISE_LOSSES, simpo_loss
from course_lib.toyworld.data import load_preferences
from course_lib.toyworld.models import load_model_and_tokenizer


def test_simpo_is_the_papers_formula_on_averaged_logps():
    chosen, rejected = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64), torch.tensor([-1.5, -1.0, -3.0])
    rejected = rejected.double()
    got = simpo_loss(chosen, rejected, beta=2.5, gamma=0.8)
    # TRL's CPOTrainer(loss_type="simpo"): logits = (chosen - rejected) - gamma / beta; -logsigmoid(beta * logits)
    trl = -F.logsigmoid(2.5 * ((chosen - rejected) - 0.8 / 2.5))
    torch.testing.assert_close(got, trl)
    # at equal averaged log-probs the loss is softplus(gamma): the margin gamma is still to be earned
    equal = simpo_loss(chosen, chosen, beta=2.0, gamma=0.5)
    torch.testing.assert_close(equal, torch.full_like(equal, math.log1p(math.exp(0.5))))


def test_simpo_ignores_the_reference_and_its_gradient_raises_the_chosen():
    chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-1.0, -1.0], requires_grad=True)
    with_ref = simpo_loss(chosen, rejected, torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(with_ref, simpo_loss(chosen, rejected))
    with_ref.sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected


@pytest.mark.parametrize("kwargs, match", [({"beta": 0.0}, "beta"), ({"gamma": float("nan")}, "gamma")])
def test_simpo_names_a_bad_hyperparameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simpo_loss(torch.zeros(2), torch.zeros(2), **kwargs)


def test_the_registry_declares_simpo_reference_free_on_averaged_logps():
    spec = PAIRWISE_LOSSES["simpo"]
    assert spec.fn is simpo_loss and spec.average_logps and not spec.needs_reference


def test_train_preference_trains_simpo_without_a_reference_forward_pass():
    reference, tokenizer = load_model_and_tokenizer()
    policy = copy.deepcopy(reference)  # before the hook: deepcopy would copy it onto the policy
    calls = []
    reference.register_forward_hook(lambda *_: calls.append(1))
    before = [p.detach().clone() for p in policy.parameters()]
    history = train_preference(
        policy,
        reference,
        load_preferences("train")[:64],
        loss="simpo",
        beta=2.0,
        steps=3,
        batch_size=8,
        tokenizer=tokenizer,
        progress=False,
    )
    assert calls == []  # the reference never ran
    assert len(history.column("loss")) == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # the policy moved
