"""course_lib.maths.losses: closed forms, oracles (paper, TRL, Mitchell, a loop), invariances, gradients, bad inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.maths.logprobs import IGNORE_INDEX, sequence_logps
from course_lib.maths.losses import (
    PAIRWISE_LOSSES,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log_ratio_margin,
    resolve_loss,
    reward_order_mask,
    rrhf_loss,
    rrhf_loss_terms,
    rrhf_scores,
)

BETAS = [0.05, 0.1, 0.5, 2.0]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
NAMES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
# every pairwise loss the library offers, as (id, callable taking the four tensors and beta)
PAIRWISE = {
    "dpo": lambda *t, beta: dpo_loss(*t, beta=beta),
    "cdpo": lambda *t, beta: dpo_loss(*t, beta=beta, label_smoothing=0.2),
    "margin_dpo": lambda *t, beta: dpo_loss(*t, beta=beta, offset=0.5),
    "ipo": lambda *t, beta: ipo_loss(*t, beta=beta),
    "hinge": lambda *t, beta: hinge_loss(*t, beta=beta),
}


def four_logps(generator, batch_size=6, dtype=torch.float64, scale=5.0):
    """Four (B,) tensors of plausible (negative) sequence log-probs."""
    return tuple(
        (-scale * torch.rand(batch_size, generator=generator, dtype=torch.float64) * 4).to(dtype) for _ in range(4)
    )


def with_margin(h, dtype=torch.float64):
    """Four (B,) tensors whose log-ratio margin is exactly h (policy_chosen = h, all others 0)."""
    h = torch.as_tensor(h, dtype=dtype).reshape(-1)
    zeros = torch.zeros_like(h)
    return h, zeros.clone(), zeros.clone(), zeros.clone()


# --- closed forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
def test_dpo_is_log2_at_zero_margin(generator, beta):
    pc, pr, rc, rr = four_logps(generator)
    # policy == reference: h = 0 whatever the log-probs are
    torch.testing.assert_close(dpo_loss(pc, pr, pc, pr, beta=beta), torch.full_like(pc, math.log(2)))
    for eps in (0.1, 0.3):  # cDPO too: at z = 0 both terms are log 2
        torch.testing.assert_close(
            dpo_loss(pc, pr, pc, pr, beta=beta, label_smoothing=eps), torch.full_like(pc, math.log(2))
        )


@pytest.mark.parametrize("eps, offset", [(0.0, 0.0), (0.2, 0.0), (0.0, 0.5), (0.25, 2.0)])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_matches_the_paper_formula(generator, beta, eps, offset):
    """Eq. 7 (with cDPO's eps and an offset m): -(1-eps) log sigmoid(z) - eps log sigmoid(-z), z = beta h - m,
    written with math in float64."""
    pc, pr, rc, rr = four_logps(generator)
    z = [beta * h - offset for h in ((pc - rc) - (pr - rr)).tolist()]
    log_sigmoid = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    expected = torch.tensor([-(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x) for x in z], dtype=torch.float64)
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps, offset=offset), expected)


@pytest.mark.parametrize("beta", BETAS)
def test_ipo_is_zero_at_its_target(beta):
    target = 1 / (2 * beta)
    torch.testing.assert_close(ipo_loss(*with_margin([target]), beta=beta), torch.zeros(1, dtype=torch.float64))
    # and it is (h - target)^2 around it
    for h in (target - 1.0, target + 3.0, 0.0):
        torch.testing.assert_close(
            ipo_loss(*with_margin([h]), beta=beta), torch.tensor([(h - target) ** 2], dtype=torch.float64)
        )


@pytest.mark.parametrize("beta", BETAS)
def test_symmetric_ipo_form_equals_eq17_plus_a_constant(generator, beta):
    """Both orderings of each pair: 0.5*((h - 1/beta)^2 + h^2) = (h - 1/(2 beta))^2 + 1/(4 beta^2)."""
    pc, pr, rc, rr = four_logps(generator)
    h = log_ratio_margin(pc, pr, rc, rr)
    symmetric = 0.5 * ((h - 1 / beta) ** 2 + h**2)
    torch.testing.assert_close(symmetric, ipo_loss(pc, pr, rc, rr, beta=beta) + 1 / (4 * beta**2))


def test_log_ratio_margin_definition(generator):
    pc, pr, rc, rr = four_logps(generator)
    torch.testing.assert_close(log_ratio_margin(pc, pr, rc, rr), (pc - rc) - (pr - rr))
    # swapping chosen and rejected flips the sign
    torch.testing.assert_close(log_ratio_margin(pr, pc, rr, rc), -log_ratio_margin(pc, pr, rc, rr))


@pytest.mark.parametrize("eps", [0.1, 0.25, 0.49])
def test_cdpo_has_a_finite_optimum(eps):
    """cDPO is minimised where sigmoid(beta h) = 1 - eps: its gradient vanishes at h* = log((1-eps)/eps) / beta."""
    margin = torch.tensor([math.log((1 - eps) / eps) / 0.5], dtype=torch.float64, requires_grad=True)
    dpo_loss(margin, *with_margin([0.0])[1:], beta=0.5, label_smoothing=eps).sum().backward()
    assert abs(margin.grad.item()) < 1e-12


@pytest.mark.parametrize("beta", BETAS)
def test_hinge_is_zero_above_one_over_beta(beta):
    h = torch.tensor([1 / beta, 1 / beta + 0.01, 1 / beta + 10.0, 1e4], dtype=torch.float64, requires_grad=True)
    pc = h
    zeros = torch.zeros(4, dtype=torch.float64)
    loss = hinge_loss(pc, zeros, zeros, zeros, beta=beta)
    torch.testing.assert_close(loss, torch.zeros(4, dtype=torch.float64))
    loss.sum().backward()
    assert bool((h.grad == 0).all()), "the hinge's gradient is exactly zero once h >= 1/beta"
    # below the kink it is 1 - beta h
    below = torch.tensor([-3.0, 0.0, 0.5 / beta], dtype=torch.float64)
    torch.testing.assert_close(hinge_loss(*with_margin(below), beta=beta), 1 - beta * below)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_each_loss_name_resolves_to_its_closed_form_at_h_zero(beta):
    """What a loss name means, by behaviour: at h = 0 DPO is log 2, IPO (1/(2 beta))**2 and the hinge 1."""
    zeros = torch.zeros(3, dtype=torch.float64)
    expected = {"dpo": math.log(2), "ipo": (1 / (2 * beta)) ** 2, "hinge": 1.0}
    assert set(expected) <= set(PAIRWISE_LOSSES)  # a new loss brings its own test (tests/test_simpo.py)
    for name, value in expected.items():
        loss = resolve_loss(name)(zeros, zeros, zeros, zeros, beta=beta)
        assert loss.shape == (3,)
        torch.testing.assert_close(loss, torch.full((3,), value, dtype=torch.float64))


def test_resolve_loss_passes_callables_through_and_names_the_choices():
    def my_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta):
        return policy_chosen_logps

    assert resolve_loss(my_loss) is my_loss
    for bad in ("DPO", "rrhf", 3, None):
        with pytest.raises(ValueError, match="dpo.*hinge.*ipo"):
            resolve_loss(bad)


def test_reward_order_mask_is_strict():
    rewards = torch.tensor([[1.0, 3.0, 1.0, 0.0]])
    worse = reward_order_mask(rewards)  # (1, 4, 4): worse[0, i, j] = r_i < r_j
    expected = [[rewards[0, i] < rewards[0, j] for j in range(4)] for i in range(4)]
    assert worse.tolist() == [expected]
    assert not worse[0, 0, 2] and not worse[0, 2, 0]  # a tie counts neither way


def test_rrhf_equals_its_sft_term_when_scores_are_ranked_as_rewards():
    # lengths differ, so the *score* (logp / length) is what must follow the rewards, not the raw logp
    candidate_logps = torch.tensor([[-2.0, -9.0, -12.0, -30.0]], dtype=torch.float64)
    candidate_lengths = torch.tensor([[2, 3, 4, 6]])
    scores = rrhf_scores(candidate_logps, candidate_lengths)  # -1, -3, -3, -5
    candidate_rewards = torch.tensor([[4.0, 3.0, 3.0, 1.0]], dtype=torch.float64)  # ties at equal scores
    assert bool((scores.argsort(descending=True) == candidate_rewards.argsort(descending=True)).all())
    rank, sft = rrhf_loss_terms(candidate_logps, candidate_lengths, candidate_rewards)
    assert rank.item() == 0.0
    assert sft.item() == 2.0  # -logp of the best (reward 4) candidate, summed, not averaged
    torch.testing.assert_close(rrhf_loss(candidate_logps, candidate_lengths, candidate_rewards), sft)
    torch.testing.assert_close(rrhf_loss(candidate_logps, candidate_lengths, candidate_rewards, sft_weight=0.0), rank)


def test_rrhf_scores_are_length_normalised():
    candidate_logps = torch.tensor([[-6.0, -6.0]], dtype=torch.float64)
    candidate_lengths = torch.tensor([[2, 3]])
    torch.testing.assert_close(
        rrhf_scores(candidate_logps, candidate_lengths), torch.tensor([[-3.0, -2.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(rrhf_scores(candidate_logps, candidate_lengths, length_penalty=0.0), candidate_logps)
    torch.testing.assert_close(
        rrhf_scores(candidate_logps, candidate_lengths, length_penalty=2.0),
        torch.tensor([[-1.5, -6.0 / 9]], dtype=torch.float64),
    )


# --- oracles -------------------------------------------------------------------------------------


def rrhf_loop(candidate_logps, candidate_lengths, candidate_rewards, length_penalty=1.0, sft_weight=1.0):
    """Eqs. 1-5 of Yuan et al. 2023, one prompt and one pair at a time, in plain Python."""
    losses = []
    for logps, lengths, rewards in zip(
        candidate_logps.tolist(), candidate_lengths.tolist(), candidate_rewards.tolist()
    ):
        scores = [lp / length**length_penalty for lp, length in zip(logps, lengths)]
        rank = 0.0
        for i in range(len(scores)):
            for j in range(len(scores)):
                if rewards[i] < rewards[j]:
                    rank += max(0.0, scores[i] - scores[j])
        best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))  # first of the tied best
        losses.append((rank, -logps[best], rank + sft_weight * -logps[best]))
    return [torch.tensor(col, dtype=torch.float64) for col in zip(*losses)]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("sft_weight", [0.0, 1.0, 3.0])
def test_rrhf_matches_a_python_loop(generator, length_penalty, sft_weight):
    batch_size, k = 5, 4
    candidate_logps = -20 * torch.rand(batch_size, k, generator=generator, dtype=torch.float64)
    candidate_lengths = torch.randint(1, 12, (batch_size, k), generator=generator)
    candidate_rewards = torch.randint(0, 3, (batch_size, k), generator=generator).double()  # plenty of ties
    rank, sft = rrhf_loss_terms(candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty)
    want_rank, want_sft, want_total = rrhf_loop(
        candidate_logps, candidate_lengths, candidate_rewards, length_penalty, sft_weight
    )
    torch.testing.assert_close(rank, want_rank)
    torch.testing.assert_close(sft, want_sft)
    got = rrhf_loss(
        candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty, sft_weight=sft_weight
    )
    torch.testing.assert_close(got, want_total)


def test_rrhf_ties_in_reward_never_count():
    candidate_logps = torch.tensor([[-1.0, -5.0, -9.0]], dtype=torch.float64)
    rank, _ = rrhf_loss_terms(candidate_logps, torch.ones(1, 3, dtype=torch.long), torch.zeros(1, 3))
    assert rank.item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rrhf_reward_order_is_kept_in_low_precision(dtype):
    """Only the order of the rewards matters: close fp32 rewards must not become ties in the log-probs' dtype."""
    candidate_logps = torch.tensor([[-1.0, -2.0]], dtype=dtype)  # the first scores higher...
    candidate_lengths = torch.ones(1, 2, dtype=torch.long)
    candidate_rewards = torch.tensor([[1.0001, 1.0002]])  # ...but has the lower reward: rank = 1
    rank, sft = rrhf_loss_terms(candidate_logps, candidate_lengths, candidate_rewards)
    assert rank.item() == 1.0
    assert sft.item() == 2.0


def trl_per_token_and_masks(logits, labels):
    """What TRL 1.16's DPOTrainer._compute_loss starts from: per-token log-probs and the completion mask.

    completion_mask marks the completion tokens of input_ids (unshifted); TRL's model returns
    per_token_logps for the shifted positions; logps = per_token_logps.sum(dim=1).
    """
    completion_mask = (labels != IGNORE_INDEX).long()  # (B, T)
    shift_completion_mask = completion_mask[:, 1:]
    next_labels = torch.where(shift_completion_mask.bool(), labels[:, 1:], torch.zeros_like(labels[:, 1:]))
    per_token_logps = (
        logits[:, :-1].log_softmax(-1).gather(-1, next_labels.unsqueeze(-1)).squeeze(-1) * shift_completion_mask
    )
    return per_token_logps.sum(dim=1), completion_mask


def trl_dpo_losses(policy_logits, ref_logits, labels, beta):
    """TRL 1.16 (trl/trainer/dpo_trainer.py, f_divergence_type="reverse_kl"), copied line for line.

    The batch is [chosen, rejected] along dim 0, as in TRL.
    """
    logps, completion_mask = trl_per_token_and_masks(policy_logits, labels)
    ref_logps, _ = trl_per_token_and_masks(ref_logits, labels)
    chosen_logps, rejected_logps = logps.chunk(2, dim=0)
    ref_chosen_logps, ref_rejected_logps = ref_logps.chunk(2, dim=0)
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    chosen_scores, rejected_scores = chosen_logratios, rejected_logratios
    delta_score = chosen_scores - rejected_scores
    sigmoid = -F.logsigmoid(beta * delta_score)
    hinge = torch.relu(1 - beta * delta_score)
    chosen_mask, rejected_mask = completion_mask.chunk(2, dim=0)
    chosen_avg_score = chosen_scores / chosen_mask.sum(dim=1).clamp(min=1.0)
    rejected_avg_score = rejected_scores / rejected_mask.sum(dim=1).clamp(min=1.0)
    ipo_delta = chosen_avg_score - rejected_avg_score
    ipo = (ipo_delta - 1 / (2 * beta)) ** 2
    return {"sigmoid": sigmoid, "hinge": hinge, "ipo": ipo}


def mitchell_ipo(pc, pr, rc, rr, beta):
    """eric-mitchell/direct-preference-optimization, trainers.preference_loss(..., ipo=True): summed log-probs."""
    pi_logratios = pc - pr
    ref_logratios = rc - rr
    logits = pi_logratios - ref_logratios
    return (logits - 1 / (2 * beta)) ** 2


@pytest.fixture
def preference_batch(generator):
    """Policy and reference logits for 3 pairs (batch [chosen x3, rejected x3]), responses of varied lengths."""
    pairs, seq_len, vocab_size, prompt_len = 3, 12, 17, 3
    labels = torch.randint(0, vocab_size, (2 * pairs, seq_len), generator=generator)
    labels[:, :prompt_len] = IGNORE_INDEX
    for row, response_len in enumerate([8, 2, 5, 3, 7, 1]):
        labels[row, prompt_len + response_len :] = IGNORE_INDEX
    policy_logits = 2 * torch.randn(2 * pairs, seq_len, vocab_size, generator=generator, dtype=torch.float64)
    ref_logits = policy_logits + 0.7 * torch.randn(policy_logits.shape, generator=generator, dtype=torch.float64)
    return policy_logits, ref_logits, labels


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_sigmoid_and_hinge_match_trl_on_summed_logps(preference_batch, beta):
    policy_logits, ref_logits, labels = preference_batch
    expected = trl_dpo_losses(policy_logits, ref_logits, labels, beta)
    pc, pr = sequence_logps(policy_logits, labels).chunk(2)
    rc, rr = sequence_logps(ref_logits, labels).chunk(2)
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta=beta), expected["sigmoid"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hinge_loss(pc, pr, rc, rr, beta=beta), expected["hinge"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_on_averaged_logps_matches_trl_and_on_summed_matches_mitchell(preference_batch, beta):
    policy_logits, ref_logits, labels = preference_batch
    trl_ipo = trl_dpo_losses(policy_logits, ref_logits, labels, beta)["ipo"]
    avg_pc, avg_pr = sequence_logps(policy_logits, labels, average=True).chunk(2)
    avg_rc, avg_rr = sequence_logps(ref_logits, labels, average=True).chunk(2)
    ours_averaged = ipo_loss(avg_pc, avg_pr, avg_rc, avg_rr, beta=beta)
    torch.testing.assert_close(ours_averaged, trl_ipo, rtol=1e-6, atol=1e-6)

    pc, pr = sequence_logps(policy_logits, labels).chunk(2)
    rc, rr = sequence_logps(ref_logits, labels).chunk(2)
    ours_summed = ipo_loss(pc, pr, rc, rr, beta=beta)
    torch.testing.assert_close(ours_summed, mitchell_ipo(pc, pr, rc, rr, beta), rtol=1e-6, atol=1e-6)
    # responses of length > 1: the two conventions really give different numbers
    assert bool(((ours_summed - ours_averaged).abs() > 1e-3).all())


# --- invariances ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAIRWISE))
@pytest.mark.parametrize("shift", [-7.5, 3.0, 100.0])
def test_shifting_all_reference_logps_changes_nothing(generator, name, shift):
    pc, pr, rc, rr = four_logps(generator)
    loss = PAIRWISE[name]
    torch.testing.assert_close(loss(pc, pr, rc + shift, rr + shift, beta=0.3), loss(pc, pr, rc, rr, beta=0.3))
    # and shifting both policy log-probs by one constant neither
    torch.testing.assert_close(loss(pc + shift, pr + shift, rc, rr, beta=0.3), loss(pc, pr, rc, rr, beta=0.3))


@pytest.mark.parametrize("name", list(PAIRWISE))
def test_permuting_the_batch_permutes_pairwise_losses(generator, name):
    tensors = four_logps(generator, batch_size=7)
    perm = torch.randperm(7, generator=generator)
    loss = PAIRWISE[name]
    torch.testing.assert_close(loss(*(t[perm] for t in tensors), beta=0.2), loss(*tensors, beta=0.2)[perm])


def test_permuting_prompts_and_candidates_for_rrhf(generator):
    candidate_logps = -20 * torch.rand(5, 4, generator=generator, dtype=torch.float64)
    candidate_lengths = torch.randint(1, 12, (5, 4), generator=generator)
    candidate_rewards = torch.rand(5, 4, generator=generator, dtype=torch.float64)
    base = rrhf_loss(candidate_logps, candidate_lengths, candidate_rewards)
    prompts = torch.randperm(5, generator=generator)
    torch.testing.assert_close(
        rrhf_loss(candidate_logps[prompts], candidate_lengths[prompts], candidate_rewards[prompts]), base[prompts]
    )
    candidates = torch.randperm(4, generator=generator)  # the order of the K candidates does not matter
    torch.testing.assert_close(
        rrhf_loss(candidate_logps[:, candidates], candidate_lengths[:, candidates], candidate_rewards[:, candidates]),
        base,
    )


def test_rrhf_depends_on_reward_order_only(generator):
    candidate_logps = -20 * torch.rand(5, 4, generator=generator, dtype=torch.float64)
    candidate_lengths = torch.randint(1, 12, (5, 4), generator=generator)
    candidate_rewards = torch.rand(5, 4, generator=generator, dtype=torch.float64)
    base = rrhf_loss(candidate_logps, candidate_lengths, candidate_rewards)
    torch.testing.assert_close(rrhf_loss(candidate_logps, candidate_lengths, 100 * candidate_rewards.exp() - 3), base)


# --- gradients -----------------------------------------------------------------------------------


def grads_of(loss_fn, h_values, beta, **kwargs):
    """Gradients of the summed loss w.r.t. the policy's chosen and rejected log-probs at the given margins."""
    pc = torch.tensor(h_values, dtype=torch.float64, requires_grad=True)
    pr = torch.zeros(len(h_values), dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(len(h_values), dtype=torch.float64)
    loss_fn(pc, pr, zeros, zeros, beta=beta, **kwargs).sum().backward()
    return pc.grad, pr.grad


@pytest.mark.parametrize("beta", BETAS)
def test_dpo_pushes_chosen_up_and_rejected_down(beta):
    h_values = [-50.0, -1.0, 0.0, 1.0, 20.0]
    grad_chosen, grad_rejected = grads_of(dpo_loss, h_values, beta)
    assert bool((grad_chosen < 0).all()), "gradient descent raises log pi(y_w)"
    assert bool((grad_rejected > 0).all()), "gradient descent lowers log pi(y_l)"
    # dL/dh = -beta * sigmoid(-beta h): never zero
    expected = torch.tensor([-beta / (1 + math.exp(beta * h)) for h in h_values], dtype=torch.float64)
    torch.testing.assert_close(grad_chosen, expected)
    torch.testing.assert_close(grad_rejected, -expected)


@pytest.mark.parametrize("beta", BETAS)
def test_ipo_gradient_flips_sign_at_its_target(beta):
    target = 1 / (2 * beta)
    h_values = [target - 5.0, target - 0.1, target, target + 0.1, target + 5.0]
    grad_chosen, grad_rejected = grads_of(ipo_loss, h_values, beta)
    assert grad_chosen[0] < 0 and grad_chosen[1] < 0, "below the target IPO raises the margin"
    assert grad_chosen[2] == 0
    assert grad_chosen[3] > 0 and grad_chosen[4] > 0, "above the target IPO pushes an over-separated pair back"
    torch.testing.assert_close(grad_chosen, 2 * (torch.tensor(h_values, dtype=torch.float64) - target))
    torch.testing.assert_close(grad_rejected, -grad_chosen)


def test_hinge_gradient_is_minus_beta_below_the_kink():
    grad_chosen, grad_rejected = grads_of(hinge_loss, [-3.0, 0.0, 4.0], 0.2)
    torch.testing.assert_close(grad_chosen, torch.full((3,), -0.2, dtype=torch.float64))
    torch.testing.assert_close(grad_rejected, torch.full((3,), 0.2, dtype=torch.float64))


@pytest.mark.parametrize("name", list(PAIRWISE))
def test_gradcheck_pairwise_losses(generator, name):
    """Finite differences agree with autograd (float64), for all four inputs."""
    tensors = [t.clone().requires_grad_(True) for t in four_logps(generator, batch_size=5, scale=0.5)]
    beta = 0.7
    if name == "hinge":  # stay away from the kink at beta * h = 1, where the derivative jumps
        h = log_ratio_margin(*tensors).detach()
        assert bool(((beta * h - 1).abs() > 1e-3).all())
    assert torch.autograd.gradcheck(lambda *t: PAIRWISE[name](*t, beta=beta), tuple(tensors))


def test_gradcheck_rrhf(generator):
    candidate_logps = (-20 * torch.rand(3, 4, generator=generator, dtype=torch.float64)).requires_grad_(True)
    candidate_lengths = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1], [2, 2, 5, 1]])
    candidate_rewards = torch.rand(3, 4, generator=generator, dtype=torch.float64)
    scores = rrhf_scores(candidate_logps, candidate_lengths).detach()
    gaps = (scores.unsqueeze(2) - scores.unsqueeze(1)).abs() + torch.eye(4, dtype=torch.float64) * 10
    assert bool((gaps > 1e-3).all()), "no two scores sit on a hinge kink"
    assert torch.autograd.gradcheck(
        lambda lp: rrhf_loss(lp, candidate_lengths, candidate_rewards, sft_weight=0.5), (candidate_logps,)
    )


def test_rrhf_gradient_signs():
    """The worse-but-higher-scoring candidate is pushed down, the better one up; the best gets the SFT push."""
    candidate_logps = torch.tensor([[-4.0, -2.0]], dtype=torch.float64, requires_grad=True)  # scores -2, -1
    rrhf_loss(candidate_logps, torch.tensor([[2, 2]]), torch.tensor([[1.0, 0.0]]), sft_weight=0.0).sum().backward()
    torch.testing.assert_close(candidate_logps.grad, torch.tensor([[-0.5, 0.5]], dtype=torch.float64))


# --- no mutation and dtypes ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAIRWISE))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pairwise_losses_keep_dtype_and_do_not_mutate(generator, name, dtype):
    tensors = four_logps(generator, dtype=dtype)
    copies = [t.clone() for t in tensors]
    versions = [t._version for t in tensors]
    loss = PAIRWISE[name](*tensors, beta=0.1)
    assert loss.dtype == dtype
    assert loss.shape == tensors[0].shape
    for t, c, v in zip(tensors, copies, versions):
        assert torch.equal(t, c)
        assert t._version == v
    # the same numbers as float64, to the dtype's precision
    reference = PAIRWISE[name](*(t.double() for t in tensors), beta=0.1)
    torch.testing.assert_close(loss.double(), reference, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rrhf_keeps_dtype_and_does_not_mutate(generator, dtype):
    candidate_logps = (-20 * torch.rand(3, 4, generator=generator)).to(dtype)
    candidate_lengths = torch.randint(1, 12, (3, 4), generator=generator)
    candidate_rewards = torch.rand(3, 4, generator=generator)
    inputs = (candidate_logps, candidate_lengths, candidate_rewards)
    copies = [t.clone() for t in inputs]
    versions = [t._version for t in inputs]
    rank, sft = rrhf_loss_terms(*inputs)
    total = rrhf_loss(*inputs)
    assert rank.dtype == sft.dtype == total.dtype == dtype
    assert total.shape == (3,)
    for t, c, v in zip(inputs, copies, versions):
        assert torch.equal(t, c)
        assert t._version == v


# --- numerics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dpo", "cdpo", "margin_dpo", "ipo", "hinge"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_losses_and_gradients_stay_finite_for_huge_margins(name, dtype, beta):
    h = torch.tensor([-1e4, -1e3, -100.0, 0.0, 100.0, 1e3, 1e4], dtype=dtype)
    pc = h.clone().requires_grad_(True)
    pr = torch.zeros_like(h).requires_grad_(True)
    zeros = torch.zeros_like(h)
    loss = PAIRWISE[name](pc, pr, zeros, zeros, beta=beta)
    assert bool(torch.isfinite(loss).all()), loss
    loss.sum().backward()
    assert bool(torch.isfinite(pc.grad).all()) and bool(torch.isfinite(pr.grad).all())


# --- bad inputs ----------------------------------------------------------------------------------

ALL_PAIRWISE = [dpo_loss, ipo_loss, hinge_loss, log_ratio_margin]


def call(fn, *tensors, **kwargs):
    if fn is log_ratio_margin:
        return fn(*tensors)
    return fn(*tensors, **kwargs)


@pytest.mark.parametrize("fn", ALL_PAIRWISE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", range(4))
def test_shape_mismatch_raises_naming_the_argument(fn, bad):
    tensors = [torch.zeros(3) for _ in range(4)]
    tensors[bad] = torch.zeros(4)
    with pytest.raises(ValueError, match=rf"same shape.*{NAMES[bad]}\(4,\)"):
        call(fn, *tensors)


@pytest.mark.parametrize("fn", ALL_PAIRWISE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", range(4))
@pytest.mark.parametrize("shape", [(3, 1), (), (2, 3)])
def test_non_1d_raises_naming_the_argument(fn, bad, shape):
    tensors = [torch.zeros(3) for _ in range(4)]
    tensors[bad] = torch.zeros(shape)
    with pytest.raises(ValueError, match=rf"{NAMES[bad]} must be 1-D with shape \(B,\)"):
        call(fn, *tensors)


@pytest.mark.parametrize("fn", ALL_PAIRWISE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", range(4))
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_logps_raise_naming_the_argument(fn, bad, dtype):
    tensors = [torch.zeros(3) for _ in range(4)]
    tensors[bad] = torch.zeros(3, dtype=dtype)
    with pytest.raises(TypeError, match=rf"{NAMES[bad]} must hold floating-point"):
        call(fn, *tensors)


@pytest.mark.parametrize("fn", ALL_PAIRWISE, ids=lambda f: f.__name__)
def test_non_tensor_logps_raise(fn):
    with pytest.raises(TypeError, match="policy_chosen_logps must be a torch.Tensor"):
        call(fn, [-1.0, -2.0], torch.zeros(2), torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("fn", [dpo_loss, ipo_loss, hinge_loss], ids=lambda f: f.__name__)
@pytest.mark.parametrize("beta", [0, 0.0, -0.1, float("nan"), float("inf"), torch.tensor(-1.0)], ids=str)
def test_beta_must_be_positive(fn, beta):
    with pytest.raises(ValueError, match="beta"):
        fn(*with_margin([1.0]), beta=beta)


@pytest.mark.parametrize("label_smoothing", [-0.1, 0.5, 0.7, 1.0])
def test_label_smoothing_outside_range_raises(label_smoothing):
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*with_margin([1.0]), label_smoothing=label_smoothing)


def rrhf_inputs(k=4):
    return torch.full((2, k), -3.0), torch.full((2, k), 3), torch.arange(2 * k, dtype=torch.float32).reshape(2, k)


@pytest.mark.parametrize("fn", [rrhf_loss, rrhf_loss_terms], ids=lambda f: f.__name__)
def test_rrhf_needs_two_candidates(fn):
    with pytest.raises(ValueError, match="K >= 2"):
        fn(*rrhf_inputs(k=1))


@pytest.mark.parametrize("fn", [rrhf_loss, rrhf_loss_terms], ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad_length", [0, -2])
def test_rrhf_lengths_must_be_positive(fn, bad_length):
    candidate_logps, candidate_lengths, candidate_rewards = rrhf_inputs()
    candidate_lengths = candidate_lengths.clone()
    candidate_lengths[1, 2] = bad_length
    with pytest.raises(ValueError, match="candidate_lengths"):
        fn(candidate_logps, candidate_lengths, candidate_rewards)


@pytest.mark.parametrize("bad", range(3))
def test_rrhf_shapes_must_agree(bad):
    inputs = list(rrhf_inputs())
    inputs[bad] = inputs[bad][:, :3]
    with pytest.raises(ValueError, match="must have the same shape"):
        rrhf_loss(*inputs)


@pytest.mark.parametrize("bad", range(3))
def test_rrhf_inputs_must_be_2d(bad):
    names = ("candidate_logps", "candidate_lengths", "candidate_rewards")
    inputs = list(rrhf_inputs())
    inputs[bad] = inputs[bad].flatten()
    with pytest.raises(ValueError, match=rf"{names[bad]} must be 2-D with shape \(B, K\)"):
        rrhf_loss(*inputs)


def test_rrhf_integer_logps_raise():
    candidate_logps, candidate_lengths, candidate_rewards = rrhf_inputs()
    with pytest.raises(TypeError, match="candidate_logps"):
        rrhf_loss(candidate_logps.long(), candidate_lengths, candidate_rewards)
    with pytest.raises(TypeError, match="candidate_rewards"):
        rrhf_loss(candidate_logps, candidate_lengths, candidate_rewards.tolist())
