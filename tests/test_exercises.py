"""course_lib.teaching.exercises: each checker recognises broken implementations, passes correct ones, never raises.

The broken implementations below are written the way a learner would write them (the seed's snippets
translated faithfully into the tensor signature among them); each must get its intended diagnosis.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.maths.losses import dpo_loss, ipo_loss, rrhf_loss
from course_lib.teaching.exercises import check_dpo_loss, check_ipo_loss, check_rrhf_loss
from course_lib.teaching.exercises.pairwise import DPO_MISTAKES, IPO_MISTAKES, PAIRWISE_CASES, Pairs
from course_lib.teaching.exercises.ranking import RANKING_CASES, RRHF_MISTAKES, _Rankings


def margin(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


# ---------------------------------------------------------------------------------------------------
# DPO: broken implementations
# ---------------------------------------------------------------------------------------------------


def seed_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    """The seed's dpo_loss, with the log-probs passed in instead of read off a model."""
    policy_logps = policy_chosen_logps - policy_rejected_logps
    reference_logps = ref_chosen_logps - ref_rejected_logps
    loss = -torch.log(torch.sigmoid(beta * (policy_logps - reference_logps)))
    return loss.mean()


def dpo_swapped(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * ((pr - rr) - (pc - rc)))


def dpo_no_reference(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * (pc - pr))


def dpo_naive(pc, pr, rc, rr, *, beta=0.1):
    return -torch.log(torch.sigmoid(beta * margin(pc, pr, rc, rr)))


def dpo_log1p_exp(pc, pr, rc, rr, *, beta=0.1):
    return torch.log1p(torch.exp(-beta * margin(pc, pr, rc, rr)))


def dpo_naive_no_reference(pc, pr, rc, rr, *, beta=0.1):
    return -torch.log(torch.sigmoid(beta * (pc - pr)))


def dpo_batch_mean(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr)).mean()


def dpo_batch_sum(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr)).sum()


def dpo_is_ipo(pc, pr, rc, rr, *, beta=0.1):
    return ipo_loss(pc, pr, rc, rr, beta=beta)


def dpo_detached(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr)).detach()


def dpo_rebuilt_tensor(pc, pr, rc, rr, *, beta=0.1):
    return torch.tensor([-F.logsigmoid(beta * h).item() for h in margin(pc, pr, rc, rr)], dtype=pc.dtype)


def dpo_in_place(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    policy_chosen_logps -= ref_chosen_logps
    policy_rejected_logps -= ref_rejected_logps
    return -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps))


def dpo_item(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr)).mean().item()


def dpo_numpy(pc, pr, rc, rr, *, beta=0.1):
    h = margin(pc, pr, rc, rr).float().numpy()
    return np.log1p(np.exp(-beta * h))


def dpo_list(pc, pr, rc, rr, *, beta=0.1):
    return [-F.logsigmoid(beta * h) for h in margin(pc, pr, rc, rr)]


def dpo_column(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr)).unsqueeze(1)


def dpo_squeezed(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr)).squeeze()


def dpo_where_nan_grad(pc, pr, rc, rr, *, beta=0.1):
    z = beta * margin(pc, pr, rc, rr)
    return torch.where(z < -50, -z, -torch.log(torch.sigmoid(z)))


def dpo_log_of_margin(pc, pr, rc, rr, *, beta=0.1):
    return -torch.log(beta * margin(pc, pr, rc, rr))


def dpo_no_beta_keyword(pc, pr, rc, rr):
    return -F.logsigmoid(0.1 * margin(pc, pr, rc, rr))


def dpo_raises(pc, pr, rc, rr, *, beta=0.1):
    raise ValueError("oops, shapes")


def dpo_forgot_return(pc, pr, rc, rr, *, beta=0.1):
    -F.logsigmoid(beta * margin(pc, pr, rc, rr))


def dpo_constant(pc, pr, rc, rr, *, beta=0.1):
    return torch.full_like(pc, 0.3)


DPO_BROKEN = [
    (seed_dpo_loss, ["This is the seed's dpo_loss: its formula is right", "F.logsigmoid", "its mean"]),
    (dpo_swapped, ["swapped"]),
    (dpo_no_reference, ["ignores the reference model"]),
    (dpo_naive, ["-F.logsigmoid(z)", "extreme-margin"]),
    (dpo_log1p_exp, ["torch.log(1 + torch.exp(-z))", "extreme-margin"]),
    (dpo_naive_no_reference, ["ignores the reference model", "extreme-margin"]),
    (dpo_batch_mean, ["one number for the whole batch (its mean)"]),
    (dpo_is_ipo, ["This is the IPO loss", "check_ipo_loss"]),
    (dpo_detached, ["cut off from the autograd graph"]),
    (dpo_rebuilt_tensor, ["cut off from the autograd graph"]),
    (dpo_in_place, ["changed its input policy_chosen_logps in place"]),
    (dpo_item, ["Python float"]),
    (dpo_numpy, ["numpy"]),
    (dpo_list, ["returns a Python list", "torch.stack"]),
    (dpo_column, ["shape (4, 1) for a batch of 4"]),
    (dpo_squeezed, ["For a batch of size 1 your function returns shape ()"]),
    (dpo_where_nan_grad, ["inf/NaN", "torch.where"]),
    (dpo_log_of_margin, ["inf or NaN on the case: a batch of 4 pairs", "(yours: [1.386, nan, 0.1054, inf])"]),
    (
        dpo_no_beta_keyword,
        [
            "cannot take the library's arguments (got an unexpected keyword argument 'beta')",
            "def my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, "
            "ref_rejected_logps, *, beta=0.1)",
        ],
    ),
    (dpo_batch_sum, ["one number for the whole batch (its sum)"]),
    (dpo_raises, ["raised ValueError: oops, shapes (on the case: a batch of 4 pairs, beta = 0.1)"]),
    (dpo_forgot_return, ["returns None"]),
    (dpo_constant, ["course_lib.maths.losses.dpo_loss gives [0.5759, 0.7185, 0.3412, 0.6931]", "Check, in order"]),
]


# ---------------------------------------------------------------------------------------------------
# IPO: broken implementations
# ---------------------------------------------------------------------------------------------------


def seed_ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    """The seed's ipo_loss, with the log-probs passed in instead of read off a model."""
    chosen_logps = policy_chosen_logps
    rejected_logps = policy_rejected_logps
    loss = -torch.log(torch.sigmoid(chosen_logps - rejected_logps - beta))
    return loss.mean()


def ipo_is_dpo(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr))


def ipo_precedence(pc, pr, rc, rr, *, beta=0.1):
    return (margin(pc, pr, rc, rr) - 1 / 2 * beta) ** 2


def ipo_beta_times_h(pc, pr, rc, rr, *, beta=0.1):
    return (beta * margin(pc, pr, rc, rr) - 1 / 2) ** 2


def ipo_swapped(pc, pr, rc, rr, *, beta=0.1):
    return (margin(pr, pc, rr, rc) - 1 / (2 * beta)) ** 2


def ipo_batch_mean(pc, pr, rc, rr, *, beta=0.1):
    return ((margin(pc, pr, rc, rr) - 1 / (2 * beta)) ** 2).mean()


def ipo_touches_reference(pc, pr, rc, rr, *, beta=0.1):
    rc.mul_(1.0)  # values unchanged, but an in-place write all the same
    return (margin(pc, pr, rc, rr) - 1 / (2 * beta)) ** 2


def ipo_half_detached(pc, pr, rc, rr, *, beta=0.1):
    gap = margin(pc, pr, rc, rr) - 1 / (2 * beta)
    return gap.detach() * gap


def ipo_not_implemented(pc, pr, rc, rr, *, beta=0.1):
    # YOUR CODE HERE
    raise NotImplementedError()


IPO_BROKEN = [
    (seed_ipo_loss, ["This is the seed's ipo_loss", "ignores the reference model", "its mean", "extreme-margin"]),
    (ipo_is_dpo, ["This is the DPO loss"]),
    (ipo_precedence, ["1/2*beta means (1/2)*beta"]),
    (ipo_beta_times_h, ["beta**2 times IPO's"]),
    (ipo_swapped, ["same as swapping chosen and rejected"]),
    (ipo_batch_mean, ["one number for the whole batch (its mean)"]),
    (ipo_touches_reference, ["changed its input ref_chosen_logps in place"]),
    (ipo_half_detached, ["gradients with respect to policy_chosen_logps differ"]),
]


# ---------------------------------------------------------------------------------------------------
# RRHF: broken implementations
# ---------------------------------------------------------------------------------------------------


def seed_rrhf_loss(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty=1.0, sft_weight=1.0):
    """The seed's rrhf_loss, one prompt at a time; model(prompt, response) is the summed log-prob."""
    losses = []
    for logps, rewards in zip(candidate_logps, candidate_rewards):
        scores = rewards.tolist()
        responses = list(range(len(logps)))
        sorted_pairs = sorted(zip(responses, scores), key=lambda x: x[1], reverse=True)
        sorted_responses = [r for r, s in sorted_pairs]
        total_loss = 0.0
        for i in range(len(sorted_responses)):
            for j in range(i + 1, len(sorted_responses)):
                pos_logits = logps[sorted_responses[i]]
                neg_logits = logps[sorted_responses[j]]
                loss = -torch.log_softmax([pos_logits, neg_logits], dim=0)[0]
                total_loss += loss
        losses.append(total_loss / (len(sorted_responses) ** 2))
    return torch.stack(losses)


def seed_rrhf_loss_stacked(
    candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty=1.0, sft_weight=1.0
):
    """The seed's rrhf_loss with only its TypeError fixed (torch.stack around the pair)."""
    losses = []
    for logps, rewards in zip(candidate_logps, candidate_rewards):
        order = sorted(range(len(logps)), key=lambda k: rewards[k].item(), reverse=True)
        total_loss = 0.0
        for i in range(len(order)):
            for j in range(i + 1, len(order)):
                pair = torch.stack([logps[order[i]], logps[order[j]]])
                total_loss += -torch.log_softmax(pair, dim=0)[0]
        losses.append(total_loss / (len(order) ** 2))
    return torch.stack(losses)


def rrhf_loop(
    candidate_logps,
    candidate_lengths,
    candidate_rewards,
    *,
    length_penalty=1.0,
    sft_weight=1.0,
    normalise=True,
    sft=True,
    ties=False,
    twice=False,
    best="argmax",
    sft_average=False,
    reduce_pairs=False,
):
    """A loop implementation with switches for the usual mistakes; all switches at default = correct."""
    losses = []
    for logps, lengths, rewards in zip(candidate_logps, candidate_lengths, candidate_rewards):
        k = len(logps)
        scores = logps / lengths.to(logps.dtype) ** length_penalty if normalise else logps
        rank, n = 0.0, 0
        for i in range(k):
            for j in range(k):
                if i == j:
                    continue
                if rewards[i] < rewards[j] or (ties and rewards[i] == rewards[j]):
                    rank = rank + torch.relu(scores[i] - scores[j]) * (2 if twice else 1)
                    n += 1
        if reduce_pairs:
            rank = rank / n
        index = {"argmax": int(rewards.argmax()), "argmin": int(rewards.argmin()), "first": 0}[best]
        sft_term = -logps[index] / (lengths[index] if sft_average else 1)
        losses.append(rank + (sft_weight * sft_term if sft else 0.0))
    return torch.stack([torch.as_tensor(x, dtype=candidate_logps.dtype) for x in losses])


def rrhf_variant(**switches):
    def fn(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty=1.0, sft_weight=1.0):
        return rrhf_loop(
            candidate_logps,
            candidate_lengths,
            candidate_rewards,
            length_penalty=length_penalty,
            sft_weight=sft_weight,
            **switches,
        )

    fn.__name__ = "my_rrhf_loss"
    return fn


def rrhf_batch_mean(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty=1.0, sft_weight=1.0):
    return rrhf_loss(
        candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty, sft_weight=sft_weight
    ).mean()


def rrhf_ignores_sft_weight(
    candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty=1.0, sft_weight=1.0
):
    return rrhf_loop(candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty)


def rrhf_clamps_lengths(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty=1.0, sft_weight=1.0):
    candidate_lengths.clamp_(min=1)
    return rrhf_loss(
        candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty, sft_weight=sft_weight
    )


RRHF_BROKEN = [
    (seed_rrhf_loss, ["raised TypeError", "torch.stack"]),
    (seed_rrhf_loss_stacked, ["This is the seed's rrhf_loss"]),
    (rrhf_variant(sft=False), ["The SFT term is missing"]),
    (rrhf_variant(normalise=False), ["not length-normalised"]),
    (rrhf_variant(best="argmin"), ["*lowest*-reward candidate"]),
    (rrhf_variant(best="first"), ["uses the first candidate"]),
    (rrhf_variant(ties=True), ["penalises candidates that tie on reward"]),
    (rrhf_variant(twice=True), ["counts each pair twice"]),
    (rrhf_variant(reduce_pairs=True), ["is a mean over pairs"]),
    (rrhf_variant(sft_average=True), ["per-token average"]),
    (rrhf_batch_mean, ["one number for the whole batch (its mean) instead of one loss per prompt"]),
    (rrhf_ignores_sft_weight, ["ignores sft_weight"]),
    (rrhf_clamps_lengths, ["changed its input candidate_lengths in place"]),
]

BROKEN = (
    [pytest.param(check_dpo_loss, fn, texts, id=f"dpo-{fn.__name__}") for fn, texts in DPO_BROKEN]
    + [pytest.param(check_ipo_loss, fn, texts, id=f"ipo-{fn.__name__}") for fn, texts in IPO_BROKEN]
    + [
        pytest.param(check_rrhf_loss, fn, texts, id=f"rrhf-{i}-{fn.__name__}")
        for i, (fn, texts) in enumerate(RRHF_BROKEN)
    ]
)


@pytest.mark.parametrize("checker, fn, texts", BROKEN)
def test_broken_implementation_gets_its_diagnosis(checker, fn, texts, capsys):
    assert checker(fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌"), out
    flat = " ".join(out.split())  # the message is wrapped at 100 columns
    for text in texts:
        assert text in flat, f"expected {text!r} in:\n{out}"


# ---------------------------------------------------------------------------------------------------
# Correct implementations pass
# ---------------------------------------------------------------------------------------------------


def my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    """Independent: softplus form, reference margin subtracted from the policy margin."""
    h = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    return F.softplus(-beta * h)


def dpo_float64(pc, pr, rc, rr, *, beta=0.1):
    """Computes in float64 and returns float64: allowed."""
    return -F.logsigmoid(beta * margin(pc.double(), pr.double(), rc.double(), rr.double()))


def my_ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1):
    """Independent: an algebraically equal form, with in-place updates of its own intermediate."""
    h = policy_chosen_logps - ref_chosen_logps
    h -= policy_rejected_logps - ref_rejected_logps
    return (2 * beta * h - 1) ** 2 / (4 * beta**2)


def my_rrhf_loss(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty=1.0, sft_weight=1.0):
    return rrhf_loop(
        candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty, sft_weight=sft_weight
    )


CORRECT = [
    pytest.param(check_dpo_loss, dpo_loss, "dpo_loss", id="dpo-library"),
    pytest.param(check_dpo_loss, my_dpo_loss, "my_dpo_loss", id="dpo-softplus"),
    pytest.param(check_dpo_loss, dpo_float64, "dpo_float64", id="dpo-float64"),
    pytest.param(check_dpo_loss, lambda *t, beta: F.softplus(-beta * margin(*t)), "your function", id="dpo-lambda"),
    pytest.param(check_ipo_loss, ipo_loss, "ipo_loss", id="ipo-library"),
    pytest.param(check_ipo_loss, my_ipo_loss, "my_ipo_loss", id="ipo-expanded"),
    pytest.param(check_rrhf_loss, rrhf_loss, "rrhf_loss", id="rrhf-library"),
    pytest.param(check_rrhf_loss, my_rrhf_loss, "my_rrhf_loss", id="rrhf-loops"),
]


@pytest.mark.parametrize("checker, fn, name", CORRECT)
def test_correct_implementation_passes(checker, fn, name, capsys):
    assert checker(fn) is True
    out = capsys.readouterr().out
    assert out.startswith(f"✅ {name} matches course_lib.maths.losses."), out
    assert "gradients included" in out


# ---------------------------------------------------------------------------------------------------
# Robustness: never raises, not-implemented, deterministic text
# ---------------------------------------------------------------------------------------------------

GARBAGE = [
    lambda *a, **k: "a string",
    lambda *a, **k: {"loss": 1.0},
    lambda *a, **k: 3,
    lambda *a, **k: torch.ones(3, 3),
    lambda *a, **k: torch.zeros(4, dtype=torch.long),
    lambda *a, **k: torch.tensor(float("nan")),
    lambda *a, **k: (torch.zeros(4), {}),
    lambda *a, **k: 1 / 0,
    lambda *a, **k: a[0][10],
    lambda *a, **k: object(),
    lambda: None,
]


@pytest.mark.parametrize("checker", [check_dpo_loss, check_ipo_loss, check_rrhf_loss])
@pytest.mark.parametrize("fn", GARBAGE)
def test_checker_never_raises_and_prints_no_address(checker, fn, capsys):
    assert checker(fn) is False
    out = capsys.readouterr().out
    assert out.startswith("❌") and "0x" not in out, out


@pytest.mark.parametrize("checker", [check_dpo_loss, check_ipo_loss, check_rrhf_loss])
def test_not_callable_is_explained(checker, capsys):
    assert checker(torch.zeros(4)) is False
    assert "Pass the function itself" in capsys.readouterr().out


@pytest.mark.parametrize("checker", [check_dpo_loss, check_ipo_loss, check_rrhf_loss])
def test_not_implemented(checker, capsys):
    def my_loss(*args, **kwargs):
        raise NotImplementedError()

    assert checker(my_loss) is False
    assert capsys.readouterr().out == (
        "⏳ my_loss is not implemented yet — replace `raise NotImplementedError()` with your code.\n"
    )


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check_dpo_loss, seed_dpo_loss),
        (check_dpo_loss, dpo_constant),
        (check_dpo_loss, my_dpo_loss),
        (check_ipo_loss, seed_ipo_loss),
        (check_rrhf_loss, seed_rrhf_loss),
        (check_rrhf_loss, rrhf_variant(twice=True)),
    ],
)
def test_output_is_identical_across_calls(checker, fn, capsys):
    first = (checker(fn), capsys.readouterr().out)
    second = (checker(fn), capsys.readouterr().out)
    assert first == second


def test_checker_leaves_global_state_alone():
    state = torch.get_rng_state()
    grad = torch.is_grad_enabled()
    check_dpo_loss(dpo_swapped)
    check_rrhf_loss(my_rrhf_loss)
    assert torch.equal(torch.get_rng_state(), state) and torch.is_grad_enabled() == grad


# ---------------------------------------------------------------------------------------------------
# The tables themselves: every known mistake is told apart from the right answer and from the others
# ---------------------------------------------------------------------------------------------------

TABLES = [
    pytest.param(check_dpo_loss, dpo_loss, DPO_MISTAKES, PAIRWISE_CASES, Pairs, id="dpo"),
    pytest.param(check_ipo_loss, ipo_loss, IPO_MISTAKES, PAIRWISE_CASES, Pairs, id="ipo"),
    pytest.param(check_rrhf_loss, rrhf_loss, RRHF_MISTAKES, RANKING_CASES, _Rankings, id="rrhf"),
]


def fingerprint(formula, cases, view):
    return [formula(view(case.build())) for case in cases]


def same(a, b):
    return all(torch.allclose(x, y, rtol=1e-3, atol=1e-3) for x, y in zip(a, b))


@pytest.mark.parametrize("checker, reference, mistakes, cases, view", TABLES)
def test_mistakes_are_distinguishable(checker, reference, mistakes, cases, view):
    prints = [fingerprint(m.formula, cases, view) for m in mistakes]
    right = fingerprint(lambda v: reference(*v.args, **v.kwargs), cases, view)
    for m, p in zip(mistakes, prints):
        assert not same(p, right), f"{m.name} equals the right answer on every case"
    for i in range(len(mistakes)):
        for j in range(i + 1, len(mistakes)):
            assert not same(prints[i], prints[j]), f"{mistakes[i].name} and {mistakes[j].name} coincide"


@pytest.mark.parametrize("checker, reference, mistakes, cases, view", TABLES)
def test_each_mistake_formula_is_diagnosed_as_itself(checker, reference, mistakes, cases, view, capsys):
    """Each formula of the table, run as a learner's function, gets its own message."""
    tensor_names = [n for n, v in cases[0].build().items() if isinstance(v, torch.Tensor)]
    for mistake in mistakes:

        def learner(*tensors, mistake=mistake, **hyper):
            inputs = {**dict(zip(tensor_names, tensors)), **hyper}
            return mistake.formula(view(inputs)).to(tensors[0].dtype)

        assert checker(learner) is False
        out = " ".join(capsys.readouterr().out.split())
        assert " ".join(mistake.message.split()) in out, f"{mistake.name}:\n{out}"


@pytest.mark.parametrize("mistakes", [DPO_MISTAKES, IPO_MISTAKES, RRHF_MISTAKES], ids=["dpo", "ipo", "rrhf"])
def test_mistake_names_are_unique(mistakes):
    names = [m.name for m in mistakes]
    assert len(set(names)) == len(names)


def test_cases_avoid_beta_one_and_cover_the_brief():
    """beta = 1 would make several beta-placement mistakes equal to the right formula."""
    inputs = [case.build() for case in PAIRWISE_CASES]
    assert all(x["beta"] != 1 for x in inputs) and len({x["beta"] for x in inputs}) >= 3
    assert any(len(x["policy_chosen_logps"]) == 1 for x in inputs)
    assert any(x["policy_chosen_logps"].dtype == torch.bfloat16 for x in inputs)
    assert max((x["beta"] * Pairs(x).h).abs().max().item() for x in inputs) >= 1e3
    assert any(len(case.build()["candidate_logps"]) == 1 for case in RANKING_CASES)


# ---------------------------------------------------------------------------------------------------
# Sharper diagnoses: each named, the kink at h = 0
# ---------------------------------------------------------------------------------------------------


def dpo_beta_hardcoded(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(0.1 * margin(pc, pr, rc, rr))


def dpo_offset(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr)) + 0.6931


def ipo_offset(pc, pr, rc, rr, *, beta=0.1):
    return (margin(pc, pr, rc, rr) - 1 / (2 * beta)) ** 2 - 1.0


def dpo_float16(pc, pr, rc, rr, *, beta=0.1):
    h = margin(pc, pr, rc, rr).half()
    return (-F.logsigmoid(beta * h)).to(pc.dtype)


def ipo_float16(pc, pr, rc, rr, *, beta=0.1):
    h = margin(pc, pr, rc, rr).to(torch.float16)
    return ((h - 1 / (2 * beta)) ** 2).to(pc.dtype)


def dpo_clamped(pc, pr, rc, rr, *, beta=0.1):
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr).clamp(-10, 10))


def dpo_kink(pc, pr, rc, rr, *, beta=0.1):
    z = beta * margin(pc, pr, rc, rr)
    return torch.relu(-z) + torch.log1p(torch.exp(-z.abs()))


SHARPER = [
    (check_dpo_loss, dpo_beta_hardcoded, "beta ignored (0.1)", ["ignores the beta it is given", "beta = 0.1"]),
    (check_dpo_loss, dpo_offset, "constant offset", ["plus a constant, 0.6931 on every pair"]),
    (check_ipo_loss, ipo_offset, "constant offset", ["plus a constant, -1 on every pair"]),
    (check_dpo_loss, dpo_float16, "float16 intermediate", ["float16"]),
    (check_ipo_loss, ipo_float16, "float16 intermediate", ["float16"]),
    (check_dpo_loss, dpo_clamped, "margin clamped", ["clamp the margin h to [-10, 10]"]),
    (check_dpo_loss, dpo_kink, "no slope at h = 0", ["no slope where every pair starts, h = 0", "kink"]),
]


@pytest.mark.parametrize("checker, fn, mistake, texts", SHARPER, ids=[f.__name__ for _, f, _, _ in SHARPER])
def test_sharper_diagnosis(checker, fn, mistake, texts, capsys):
    from course_lib.teaching.exercises import DPO_EXERCISE, IPO_EXERCISE
    from course_lib.teaching.exercises.engine import diagnose

    assert checker(fn) is False
    flat = " ".join(capsys.readouterr().out.split())
    for text in texts:
        assert text in flat, f"expected {text!r} in:\n{flat}"
    assert "detached" not in flat  # the kink is not a detached graph
    verdict = diagnose(fn, DPO_EXERCISE if checker is check_dpo_loss else IPO_EXERCISE)
    assert verdict.status == "wrong" and verdict.mistake == mistake


def dpo_with_library_margin(pc, pr, rc, rr, *, beta=0.1):
    """Uses the library's margin helper (not its loss): a valid style."""
    from course_lib.maths.losses import log_ratio_margin

    return F.softplus(-beta * log_ratio_margin(pc, pr, rc, rr))


def ipo_square(pc, pr, rc, rr, *, beta=0.1):
    return torch.square(margin(pc, pr, rc, rr) - 0.5 / beta)


def ipo_pow(pc, pr, rc, rr, *, beta=0.5):
    return ((pc - pr) - (rc - rr) - 1 / beta / 2).pow(2)


VALID_STYLES = [
    (check_dpo_loss, dpo_with_library_margin),
    (check_ipo_loss, ipo_square),
    (check_ipo_loss, ipo_pow),
]


@pytest.mark.parametrize("checker, fn", VALID_STYLES, ids=[f.__name__ for _, f in VALID_STYLES])
def test_more_valid_styles_pass(checker, fn, capsys):
    assert checker(fn) is True, capsys.readouterr().out
