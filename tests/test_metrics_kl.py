"""course_lib.maths.metrics and course_lib.maths.kl: TRL's metric names and meanings, KL estimators, exact
sequence KL."""

import math

import pytest
import torch

from course_lib.maths.kl import kl_estimators, sequence_kl
from course_lib.maths.logprobs import IGNORE_INDEX, sequence_logps
from course_lib.maths.metrics import implicit_rewards, preference_metrics

TRL_KEYS = {
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
}


def four_logps(generator, batch_size=8):
    return tuple(-10 * torch.rand(batch_size, generator=generator, dtype=torch.float64) for _ in range(4))


# --- preference metrics --------------------------------------------------------------------------


def test_metric_keys_are_trls(generator):
    metrics = preference_metrics(*four_logps(generator), beta=0.1)
    assert set(metrics) == TRL_KEYS
    assert all(isinstance(value, float) for value in metrics.values())


def test_accuracy_is_strict_and_reads_zero_when_policy_is_reference(generator):
    pc, pr, _, _ = four_logps(generator)
    metrics = preference_metrics(pc, pr, pc, pr, beta=0.1)  # step 0: policy == reference
    assert metrics["rewards/accuracies"] == 0.0
    assert metrics["rewards/margins"] == 0.0
    # one pair of four strictly ahead, one tied, two behind: 0.25
    pc = torch.tensor([1.0, 0.0, -1.0, -2.0])
    zeros = torch.zeros(4)
    assert preference_metrics(pc, zeros, zeros, zeros, beta=1.0)["rewards/accuracies"] == 0.25


def test_metrics_do_not_track_gradients_or_mutate(generator):
    tensors = [t.clone().requires_grad_(True) for t in four_logps(generator)]
    copies = [t.detach().clone() for t in tensors]
    versions = [t._version for t in tensors]
    preference_metrics(*tensors, beta=0.1)
    for t, c, v in zip(tensors, copies, versions):
        assert torch.equal(t.detach(), c) and t._version == v and t.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_metrics_accept_low_precision(generator, dtype):
    metrics = preference_metrics(*(t.to(dtype) for t in four_logps(generator)), beta=0.1)
    assert all(math.isfinite(v) for v in metrics.values())


def test_implicit_rewards_and_the_metrics_on_a_hand_example():
    policy_chosen, ref_chosen = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    policy_rejected, ref_rejected = torch.tensor([-5.0, -5.0]), torch.tensor([-4.0, -6.0])
    assert implicit_rewards(policy_chosen, ref_chosen, beta=0.5).tolist() == [1.0, -1.0]
    metrics = preference_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.5)
    # rewards: chosen (1, -1), rejected (-0.5, 0.5); margins (1.5, -1.5)
    assert metrics == {"rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/margins": 0.0,
                       "rewards/accuracies": 0.5, "logps/chosen": -2.5, "logps/rejected": -5.0}  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_implicit_rewards_keep_dtype(dtype):
    assert implicit_rewards(torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype), beta=0.1).dtype == dtype


@pytest.mark.parametrize("beta", [0, -1.0, float("nan")])
def test_metrics_bad_beta_raises(beta):
    with pytest.raises(ValueError, match="beta"):
        implicit_rewards(torch.zeros(2), torch.zeros(2), beta=beta)
    with pytest.raises(ValueError, match="beta"):
        preference_metrics(*(torch.zeros(2) for _ in range(4)), beta=beta)


def test_metrics_bad_logps_raise():
    with pytest.raises(ValueError, match="ref_logps"):
        implicit_rewards(torch.zeros(2), torch.zeros(3), beta=0.1)
    with pytest.raises(TypeError, match="policy_logps"):
        implicit_rewards(torch.zeros(2, dtype=torch.long), torch.zeros(2), beta=0.1)
    # preference_metrics names its own arguments, and chosen and rejected must agree
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        preference_metrics(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2, 1), beta=0.1)


@pytest.mark.parametrize("chosen_size, rejected_size", [(1, 4), (3, 4)])
def test_metrics_chosen_and_rejected_batches_must_agree(chosen_size, rejected_size):
    """(1,) against (4,) would broadcast into a silently wrong margin; (3,) against (4,) is a torch trace."""
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        preference_metrics(
            torch.zeros(chosen_size),
            torch.zeros(rejected_size),
            torch.zeros(chosen_size),
            torch.zeros(rejected_size),
            beta=0.1,
        )


# --- KL estimators -------------------------------------------------------------------------------

P = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=torch.float64)
Q = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.1, 0.1], dtype=torch.float64)


def test_k1_and_k3_estimate_the_exact_kl_of_a_categorical(generator):
    exact = (P * (P.log() - Q.log())).sum().item()
    samples = torch.multinomial(P, 200_000, replacement=True, generator=generator)  # y ~ p, the policy
    estimates = kl_estimators(P.log()[samples], Q.log()[samples])
    for name in ("k1", "k3"):
        values = estimates[name]
        standard_error = values.std().item() / math.sqrt(values.numel())
        assert abs(values.mean().item() - exact) < 5 * standard_error, (name, values.mean().item(), exact)
    # both unbiased, and k3 has the lower variance here
    assert estimates["k3"].var().item() < estimates["k1"].var().item()
    # k1 is negative on samples where q > p; k3 never is
    assert bool((estimates["k1"] < 0).any())
    assert bool((estimates["k3"] >= 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_k3_is_never_negative(generator, dtype):
    log_ratio = (torch.linspace(-30, 30, 2001, dtype=torch.float64)).to(dtype)
    policy_logps = (-40 * torch.rand(2001, generator=generator)).to(dtype)
    estimates = kl_estimators(policy_logps, policy_logps + log_ratio)
    assert bool((estimates["k3"] >= 0).all())
    assert bool((estimates["k2"] >= 0).all())
    # all three are exactly 0 where the policy and reference agree
    same = kl_estimators(policy_logps, policy_logps)
    assert all(float(v.abs().max()) == 0.0 for v in same.values())


def test_kl_estimators_do_not_mutate(generator):
    policy_logps, ref_logps = -torch.rand(5, generator=generator), -torch.rand(5, generator=generator)
    copies = policy_logps.clone(), ref_logps.clone()
    versions = policy_logps._version, ref_logps._version
    kl_estimators(policy_logps, ref_logps)
    assert torch.equal(policy_logps, copies[0]) and torch.equal(ref_logps, copies[1])
    assert (policy_logps._version, ref_logps._version) == versions


def test_kl_estimators_shape_mismatch_raises():
    with pytest.raises(ValueError, match="policy_logps.*ref_logps"):
        kl_estimators(torch.zeros(3), torch.zeros(4))


def test_kl_estimators_reject_non_float_inputs():
    """The project's convention: bad input raises TypeError naming the argument."""
    with pytest.raises(TypeError, match="policy_logps"):
        kl_estimators([-1.0, -2.0], torch.zeros(2))
    with pytest.raises(TypeError, match="ref_logps"):
        kl_estimators(torch.zeros(2), torch.zeros(2, dtype=torch.long))


# --- exact sequence KL ---------------------------------------------------------------------------


def make_logits_and_labels(generator, batch_size=3, seq_len=7, vocab_size=5):
    policy_logits = 2 * torch.randn(batch_size, seq_len, vocab_size, generator=generator)
    ref_logits = 2 * torch.randn(batch_size, seq_len, vocab_size, generator=generator)
    labels = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    labels[:, :2] = IGNORE_INDEX  # prompt
    labels[1, 5:] = IGNORE_INDEX  # padding
    labels[2, 3:] = IGNORE_INDEX
    return policy_logits, ref_logits, labels


def brute_force_sequence_kl(policy_logits, ref_logits, labels):
    batch_size, seq_len, _ = policy_logits.shape
    out = torch.zeros(batch_size, dtype=torch.float64)
    for b in range(batch_size):
        for t in range(seq_len - 1):
            if labels[b, t + 1] == IGNORE_INDEX:
                continue
            logp = policy_logits[b, t].double().log_softmax(-1)
            logq = ref_logits[b, t].double().log_softmax(-1)
            out[b] += (logp.exp() * (logp - logq)).sum(-1)
    return out


def test_sequence_kl_matches_brute_force(generator):
    policy_logits, ref_logits, labels = make_logits_and_labels(generator)
    got = sequence_kl(policy_logits, ref_logits, labels)
    assert got.shape == (3,) and got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), brute_force_sequence_kl(policy_logits, ref_logits, labels), rtol=1e-5, atol=1e-6
    )
    assert bool((got > 0).all())


def test_sequence_kl_of_identical_logits_is_zero(generator):
    policy_logits, _, labels = make_logits_and_labels(generator)
    assert sequence_kl(policy_logits, policy_logits.clone(), labels).abs().max().item() == 0.0


def test_sequence_kl_ignores_unscored_positions(generator):
    policy_logits, ref_logits, labels = make_logits_and_labels(generator)
    predicts_unscored = torch.cat([labels[:, 1:] == IGNORE_INDEX, torch.ones(3, 1, dtype=torch.bool)], 1).unsqueeze(-1)
    scrambled = torch.where(
        predicts_unscored, 30 * torch.randn(policy_logits.shape, generator=generator), policy_logits
    )
    torch.testing.assert_close(
        sequence_kl(scrambled, ref_logits, labels), sequence_kl(policy_logits, ref_logits, labels)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sequence_kl_is_fp32_for_half_precision(generator, dtype):
    policy_logits, ref_logits, labels = make_logits_and_labels(generator)
    got = sequence_kl(policy_logits.to(dtype), ref_logits.to(dtype), labels)
    assert got.dtype == torch.float32
    expected = brute_force_sequence_kl(policy_logits.to(dtype), ref_logits.to(dtype), labels)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_sequence_kl_does_not_mutate(generator):
    inputs = make_logits_and_labels(generator)
    copies = [t.clone() for t in inputs]
    versions = [t._version for t in inputs]
    sequence_kl(*inputs)
    for t, c, v in zip(inputs, copies, versions):
        assert torch.equal(t, c) and t._version == v


def test_sequence_kl_gradient_flows_to_the_policy(generator):
    policy_logits, ref_logits, labels = make_logits_and_labels(generator)
    policy_logits.requires_grad_(True)
    sequence_kl(policy_logits, ref_logits, labels).sum().backward()
    assert policy_logits.grad is not None and bool(torch.isfinite(policy_logits.grad).all())


def test_sequence_kl_bad_shapes_raise(generator):
    policy_logits, ref_logits, labels = make_logits_and_labels(generator)
    with pytest.raises(ValueError, match="policy_logits.*ref_logits"):
        sequence_kl(policy_logits, ref_logits[:, :-1], labels)
    with pytest.raises(ValueError, match="labels"):
        sequence_kl(policy_logits, ref_logits, labels[:, :-1])


def test_sequence_kl_wrong_rank_raises_value_error_as_the_logprobs_do(generator):
    """The same fault, the same class: a (B, T) tensor where (B, T, V) logits belong is a ValueError here and
    in ``sequence_logps``."""
    policy_logits, ref_logits, labels = make_logits_and_labels(generator)
    with pytest.raises(ValueError, match="policy_logits"):
        sequence_kl(policy_logits[..., 0], ref_logits, labels)
    with pytest.raises(ValueError, match="ref_logits"):
        sequence_kl(policy_logits, ref_logits[None], labels)
    with pytest.raises(ValueError):
        sequence_logps(policy_logits[..., 0], labels)


def test_sequence_kl_bad_dtypes_raise(generator):
    """The project's convention: bad input raises TypeError naming the argument."""
    policy_logits, ref_logits, labels = make_logits_and_labels(generator)
    with pytest.raises(TypeError, match="labels"):
        sequence_kl(policy_logits, ref_logits, labels.float())
    with pytest.raises(TypeError, match="policy_logits"):
        sequence_kl(policy_logits.long(), ref_logits.long(), labels)
