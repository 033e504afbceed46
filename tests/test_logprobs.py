"""course_lib.maths.logprobs: token_logps and sequence_logps against naive oracles, invariances, bad inputs."""

import pytest
import torch

from course_lib.maths.logprobs import IGNORE_INDEX, sequence_logps, token_logps

# Tolerances for a library result in `dtype` against a float64 oracle on the same (upcast) logits.
# Per token: the result is rounded once or twice in `dtype` (|value| ~ log V ~ 2-8, eps(bf16) = 2**-8).
TOKEN_TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=1e-2),
    torch.bfloat16: dict(rtol=2e-2, atol=8e-2),
}
# Per sequence: a sum of up to T rounded tokens, accumulated in `dtype`.
SEQUENCE_TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-4),
    torch.float16: dict(rtol=5e-3, atol=5e-2),
    torch.bfloat16: dict(rtol=3e-2, atol=0.5),
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make_batch(generator, *, batch_size=4, seq_len=9, vocab_size=11, dtype=torch.float32, prompt_len=3):
    """Random (B, T, V) logits and (B, T) labels: -100 on a prompt of `prompt_len` and on right padding.

    Row b has a response of length max(1, T - prompt_len - b): every row scores at least one token.
    """
    logits = (3.0 * torch.randn(batch_size, seq_len, vocab_size, generator=generator, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    labels[:, :prompt_len] = IGNORE_INDEX
    for b in range(batch_size):
        response_len = max(1, seq_len - prompt_len - b)
        labels[b, prompt_len + response_len :] = IGNORE_INDEX
    return logits, labels


def naive_token_logps(logits, labels, ignore_index=IGNORE_INDEX):
    """The one-liner the library replaces, in float64: log_softmax over V, then gather, then mask."""
    next_logits = logits[:, :-1].double()  # (B, T-1, V)
    next_labels = labels[:, 1:]  # (B, T-1)
    scored = next_labels != ignore_index
    safe_labels = torch.where(scored, next_labels, torch.zeros_like(next_labels))
    per_token = next_logits.log_softmax(-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return per_token * scored


def naive_sequence_logps(logits, labels, *, average=False):
    per_token = naive_token_logps(logits, labels)
    summed = per_token.sum(-1)
    if not average:
        return summed
    return summed / (labels[:, 1:] != IGNORE_INDEX).sum(-1)


# --- oracles -------------------------------------------------------------------------------------


# float64 is in the list on purpose: the library must not compute a float64 input in float32.
@pytest.mark.parametrize("dtype", [torch.float64, *DTYPES], ids=str)
def test_token_logps_matches_log_softmax_gather(generator, dtype):
    logits, labels = make_batch(generator, dtype=dtype)
    got = token_logps(logits, labels)
    assert got.shape == (logits.shape[0], logits.shape[1] - 1)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), naive_token_logps(logits, labels), **TOKEN_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, *DTYPES], ids=str)
@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_matches_naive(generator, dtype, average):
    logits, labels = make_batch(generator, dtype=dtype, batch_size=5, seq_len=24, vocab_size=50)
    got = sequence_logps(logits, labels, average=average)
    assert got.shape == (5,)
    assert got.dtype == dtype
    torch.testing.assert_close(
        got.double(), naive_sequence_logps(logits, labels, average=average), **SEQUENCE_TOL[dtype]
    )


def test_average_is_sum_over_scored_token_count(generator):
    logits, labels = make_batch(generator, batch_size=4, seq_len=10)
    n_scored = (labels[:, 1:] != IGNORE_INDEX).sum(-1)
    assert len(set(n_scored.tolist())) > 1, "rows of different lengths make this test meaningful"
    summed = sequence_logps(logits, labels)
    averaged = sequence_logps(logits, labels, average=True)
    torch.testing.assert_close(averaged, summed / n_scored)


@pytest.mark.parametrize("batch_size", [1, 3, 8, 9, 17])
def test_chunking_over_rows_does_not_change_the_result(generator, batch_size):
    """The library works over at most 8 chunks of rows: batch sizes around the chunk edges agree with the oracle."""
    logits, labels = make_batch(generator, batch_size=batch_size, seq_len=6, vocab_size=7, prompt_len=1)
    torch.testing.assert_close(
        token_logps(logits, labels).double(), naive_token_logps(logits, labels), **TOKEN_TOL[torch.float32]
    )


def test_shift_convention_on_a_hand_example():
    """logits[:, t] predict labels[:, t+1]; labels[:, 0] is never scored."""
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64))
    labels = torch.tensor([[2, 1, 2]])  # label 2 at t=0 is never scored
    expected = torch.log(torch.tensor([[0.25, 0.7]], dtype=torch.float64))
    torch.testing.assert_close(token_logps(logits, labels), expected)
    torch.testing.assert_close(sequence_logps(logits, labels), expected.sum(-1))
    torch.testing.assert_close(sequence_logps(logits, labels, average=True), expected.mean(-1))


def test_unscored_positions_are_zero(generator):
    logits, labels = make_batch(generator)
    got = token_logps(logits, labels)
    unscored = labels[:, 1:] == IGNORE_INDEX
    assert bool(unscored.any())
    assert bool((got[unscored] == 0).all())
    assert bool((got[~unscored] < 0).all())


def test_custom_ignore_index(generator):
    logits, labels = make_batch(generator)
    relabelled = torch.where(labels == IGNORE_INDEX, torch.full_like(labels, -1), labels)
    torch.testing.assert_close(sequence_logps(logits, relabelled, ignore_index=-1), sequence_logps(logits, labels))


# --- invariances ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_right_padding_changes_nothing(generator, dtype):
    """More -100 positions on the right, with garbage logits there, leave every sequence's log-prob unchanged."""
    logits, labels = make_batch(generator, dtype=dtype, batch_size=3, seq_len=8)
    extra = 5
    garbage = (1e3 * torch.randn(3, extra, logits.shape[-1], generator=generator)).to(dtype)
    padded_logits = torch.cat([logits, garbage], dim=1)  # (B, T + extra, V)
    padded_labels = torch.cat([labels, torch.full((3, extra), IGNORE_INDEX)], dim=1)
    # the last real position's logits now predict a -100 label; put garbage there too
    padded_logits[:, labels.shape[1] - 1] = (1e3 * torch.randn(3, logits.shape[-1], generator=generator)).to(dtype)
    for average in (False, True):
        torch.testing.assert_close(
            sequence_logps(padded_logits, padded_labels, average=average),
            sequence_logps(logits, labels, average=average),
            rtol=0,
            atol=0,
        )


def test_logits_at_unscored_positions_do_not_matter(generator):
    logits, labels = make_batch(generator)
    predicts_unscored = torch.cat([labels[:, 1:] == IGNORE_INDEX, torch.ones(labels.shape[0], 1, dtype=torch.bool)], 1)
    scrambled = torch.where(
        predicts_unscored.unsqueeze(-1), 50 * torch.randn(logits.shape, generator=generator), logits
    )
    torch.testing.assert_close(sequence_logps(scrambled, labels), sequence_logps(logits, labels), rtol=0, atol=0)


def test_permuting_the_batch_permutes_the_output(generator):
    logits, labels = make_batch(generator, batch_size=6)
    perm = torch.randperm(6, generator=generator)
    for average in (False, True):
        torch.testing.assert_close(
            sequence_logps(logits[perm], labels[perm], average=average),
            sequence_logps(logits, labels, average=average)[perm],
        )
    torch.testing.assert_close(token_logps(logits[perm], labels[perm]), token_logps(logits, labels)[perm])


# --- no mutation, dtypes, autograd ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("average", [False, True])
def test_inputs_are_not_mutated(generator, dtype, average):
    logits, labels = make_batch(generator, dtype=dtype)
    logits_copy, labels_copy = logits.clone(), labels.clone()
    versions = (logits._version, labels._version)
    sequence_logps(logits, labels, average=average)
    token_logps(logits, labels)
    assert torch.equal(logits, logits_copy)
    assert torch.equal(labels, labels_copy)
    assert (logits._version, labels._version) == versions


def test_autograd_through_sequence_logps_matches_naive(generator):
    logits, labels = make_batch(generator)
    logits.requires_grad_(True)
    weights = torch.randn(logits.shape[0], generator=generator)
    (sequence_logps(logits, labels) * weights).sum().backward()
    got = logits.grad.clone()
    logits.grad = None
    (naive_sequence_logps(logits, labels) * weights).sum().backward()
    torch.testing.assert_close(got, logits.grad, rtol=1e-5, atol=1e-6)
    # positions that predict an unscored label get exactly zero gradient
    predicts_unscored = torch.cat([labels[:, 1:] == IGNORE_INDEX, torch.ones(labels.shape[0], 1, dtype=torch.bool)], 1)
    assert bool((got[predicts_unscored] == 0).all())


@pytest.mark.parametrize("average", [False, True])
def test_gradcheck_sequence_logps(generator, average):
    """Finite differences agree with autograd (float64: needs the library to keep float64 in float64)."""
    logits, labels = make_batch(generator, batch_size=3, seq_len=5, vocab_size=4, dtype=torch.float64, prompt_len=1)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: sequence_logps(x, labels, average=average), (logits,))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autograd_works_in_every_dtype(generator, dtype):
    logits, labels = make_batch(generator, dtype=dtype)
    logits.requires_grad_(True)
    sequence_logps(logits, labels, average=True).sum().backward()
    assert logits.grad is not None and logits.grad.dtype == dtype
    assert bool(torch.isfinite(logits.grad).all())


def test_softmax_gradient_rows_sum_to_zero(generator):
    """d logp(label) / d logits = onehot - softmax: each scored position's gradient sums to 0 over V."""
    logits, labels = make_batch(generator)
    logits.requires_grad_(True)
    sequence_logps(logits, labels).sum().backward()
    torch.testing.assert_close(logits.grad.sum(-1), torch.zeros(logits.shape[:2]), rtol=0, atol=1e-6)


# --- bad inputs ----------------------------------------------------------------------------------


def test_integer_logits_raise(generator):
    _, labels = make_batch(generator)
    with pytest.raises(TypeError, match="logits"):
        sequence_logps(torch.zeros(4, 9, 11, dtype=torch.int64), labels)


def test_non_tensor_inputs_raise(generator):
    logits, labels = make_batch(generator)
    with pytest.raises(TypeError, match="logits"):
        sequence_logps(logits.tolist(), labels)
    with pytest.raises(TypeError, match="labels"):
        sequence_logps(logits, labels.tolist())


@pytest.mark.parametrize("shape", [(9, 11), (4, 9, 11, 1)])
def test_logits_not_3d_raise(generator, shape):
    _, labels = make_batch(generator)
    with pytest.raises(ValueError, match="logits"):
        token_logps(torch.zeros(shape), labels)


@pytest.mark.parametrize("label_dtype", [torch.float32, torch.bool])
def test_non_integer_labels_raise(generator, label_dtype):
    logits, labels = make_batch(generator)
    with pytest.raises(TypeError, match="labels"):
        sequence_logps(logits, labels.clamp(min=0).to(label_dtype))


@pytest.mark.parametrize("labels_shape", [(4, 8), (3, 9), (4, 9, 1), (36,)])
def test_labels_shape_mismatch_raises(generator, labels_shape):
    logits, _ = make_batch(generator)
    with pytest.raises(ValueError, match="labels"):
        sequence_logps(logits, torch.zeros(labels_shape, dtype=torch.long))


@pytest.mark.parametrize("bad_id", [11, 1000, -1, -7])
def test_label_outside_the_vocabulary_raises(generator, bad_id):
    logits, labels = make_batch(generator)  # V = 11
    labels = labels.clone()
    labels[0, 4] = bad_id  # a scored position
    with pytest.raises(ValueError, match=rf"labels.*{bad_id}.*vocabulary"):
        sequence_logps(logits, labels)


def test_average_with_no_scored_token_raises(generator):
    logits, labels = make_batch(generator)
    labels = labels.clone()
    labels[2, 1:] = IGNORE_INDEX
    with pytest.raises(ValueError, match=r"sequences \[2\] have no scored token"):
        sequence_logps(logits, labels, average=True)
    # summing is well defined: an empty sum is 0
    assert sequence_logps(logits, labels)[2].item() == 0.0
