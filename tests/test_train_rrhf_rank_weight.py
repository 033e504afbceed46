"""train_rrhf's rank_weight: 0 trains on the best candidate alone (fine-tuning on the best of K); 1 is Eq. 5."""

import copy

import pytest
import torch

from course_lib.loop.training import train_rrhf
from course_lib.toyworld.data import load_rankings
from course_lib.toyworld.models import load_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world():
    reference, tokenizer = load_model_and_tokenizer()
    return {"reference": reference, "tokenizer": tokenizer, "rankings": load_rankings("train")[:20]}


def _run(world, **kwargs):
    policy = copy.deepcopy(world["reference"]).requires_grad_(True)
    settings = dict(steps=3, batch_size=4, lr=1e-3, seed=0, device="cpu", tokenizer=world["tokenizer"], progress=False)
    settings.update(kwargs)
    return policy, train_rrhf(policy, world["rankings"], **settings)


def test_rank_weight_zero_minimises_the_sft_term_alone(world):
    _, history = _run(world, rank_weight=0.0, sft_weight=0.5)
    for entry in history:
        assert entry["loss"] == pytest.approx(0.5 * entry["sft_loss"], rel=1e-6)
        assert entry["rank_loss"] >= 0  # still recorded


def test_rank_weight_scales_the_rank_term(world):
    _, history = _run(world, rank_weight=2.0, sft_weight=1.0)
    for entry in history:
        assert entry["loss"] == pytest.approx(2.0 * entry["rank_loss"] + entry["sft_loss"], rel=1e-5)


def test_the_default_is_eq_5_bit_for_bit(world):
    default_policy, default_history = _run(world)
    explicit_policy, explicit_history = _run(world, rank_weight=1.0)
    assert default_history.column("loss") == explicit_history.column("loss")
    for a, b in zip(default_policy.parameters(), explicit_policy.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad, error", [(-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)])
def test_bad_rank_weight_is_named(world, bad, error):
    with pytest.raises(error, match="rank_weight"):
        _run(world, rank_weight=bad)
