"""The IPO paper's toy bandit: batched training equals separate runs, IPO's closed-form optimum, the
stored D1 sweep matches a regenerated slice."""

import math

import pytest
import torch

from course_lib.maths.bandit import bandit_kl, ipo_bandit_optimum
from course_lib.maths.losses import PAIRWISE_LOSSES, dpo_loss
from course_lib.toyworld.bandit import (
    D1,
    D1_SWEEP,
    load_d1_sweep,
    sample_pair_indices,
    train_bandit,
    train_bandit_sweep,
)


def naive_train(preferences, *, loss, beta, steps, lr=0.01, batch_size=9, seed=0, ref_probs=None):
    """An independent, unbatched implementation: one config, log_softmax, its own Adam."""
    n = max(max(p) for p in preferences) + 1 if ref_probs is None else len(ref_probs)
    ref = torch.full((n,), 1.0 / n) if ref_probs is None else torch.tensor(ref_probs)
    ref_logps = ref.log()
    theta = ref_logps.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    fn = PAIRWISE_LOSSES[loss] if isinstance(loss, str) else loss
    batches = torch.randint(len(preferences), (steps, batch_size), generator=torch.Generator().manual_seed(seed))
    out = []
    for t in range(steps):
        logps = torch.log_softmax(theta, -1)
        w = torch.tensor([preferences[i][0] for i in batches[t]])
        l = torch.tensor([preferences[i][1] for i in batches[t]])
        value = fn(logps[w], logps[l], ref_logps[w], ref_logps[l], beta=beta).mean()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        out.append(torch.softmax(theta.detach(), -1))
    return torch.stack(out)


def d1_closed_form(tau):
    """pi proportional to (exp(2/(3 tau)), exp(1/(3 tau)), 1): u_a - u_b = u_b - u_c = 1/(3 tau)."""
    return torch.softmax(torch.tensor([2.0, 1.0, 0.0]) / (3.0 * tau), -1)


# ----------------------------------------------------------------------------- training
def test_train_bandit_shape_and_start():
    probs = train_bandit(D1, loss="ipo", beta=0.5, steps=20)
    assert probs.shape == (20, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(20), atol=1e-6)
    # one Adam step from the uniform policy moves each theta by about lr: still close to uniform
    assert torch.allclose(probs[0], torch.full((3,), 1 / 3), atol=0.02)
    assert probs[-1, 0] > probs[-1, 1] > probs[-1, 2]  # a > b > c in D1


def test_sweep_equals_separate_runs():
    losses, betas, seeds = ["dpo", "ipo", "hinge"], [0.1, 1.0], [0, 7]
    sweep = train_bandit_sweep(D1, losses=losses, betas=betas, seeds=seeds, steps=120)
    assert sweep.shape == (3, 2, 2, 120, 3)
    for i, loss in enumerate(losses):
        for j, beta in enumerate(betas):
            for k, seed in enumerate(seeds):
                alone = naive_train(list(D1), loss=loss, beta=beta, steps=120, seed=seed)
                torch.testing.assert_close(sweep[i, j, k], alone, atol=1e-5, rtol=1e-5)


def test_callable_loss_and_non_uniform_reference():
    ref = [0.5, 0.3, 0.2]

    def my_margin_dpo(pc, pr, rc, rr, *, beta):
        return dpo_loss(pc, pr, rc, rr, beta=beta, offset=0.5)

    ours = train_bandit(D1, loss=my_margin_dpo, beta=0.5, steps=80, ref_probs=ref, seed=2)
    theirs = naive_train(list(D1), loss=my_margin_dpo, beta=0.5, steps=80, ref_probs=ref, seed=2)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    first = train_bandit(D1, loss="ipo", beta=0.5, steps=1, lr=1e-9, ref_probs=ref)
    torch.testing.assert_close(first[0], torch.tensor(ref), atol=1e-6, rtol=0)  # starts at the reference


def test_batches_are_a_prefix_of_longer_runs():
    long = sample_pair_indices(3, steps=100, batch_size=9, seed=5)
    short = sample_pair_indices(3, steps=10, batch_size=9, seed=5)
    assert torch.equal(long[:10], short)
    assert long.min() >= 0 and long.max() <= 2


def test_two_actions_ipo_converges_to_closed_form():
    # one pair, so every batch is the same and the gradient is exact: Adam settles on sigmoid(1/(2 tau))
    for tau in (0.25, 1.0):
        probs = train_bandit([(0, 1)], loss="ipo", beta=tau, steps=3000)
        assert abs(float(probs[-1, 0]) - 1 / (1 + math.exp(-1 / (2 * tau)))) < 2e-3


def test_two_actions_dpo_keeps_going():
    probs = train_bandit([(0, 1)], loss="dpo", beta=1.0, steps=3000)
    assert float(probs[-1, 0]) > 0.999  # far above IPO's sigmoid(0.5) = 0.62
    assert float(probs[-1, 0]) > float(probs[1499, 0])  # still rising


def test_ipo_d1_training_reaches_closed_form_with_non_uniform_reference():
    ref = [0.2, 0.5, 0.3]
    optimum = ipo_bandit_optimum(D1, beta=0.5, ref_probs=ref)
    runs = torch.stack([train_bandit(D1, loss="ipo", beta=0.5, steps=4000, seed=s, ref_probs=ref) for s in range(3)])
    settled = runs[:, -1000:].mean((0, 1))  # mean over seeds and the last 1000 steps
    assert (settled - optimum).abs().max() < 0.02


# ----------------------------------------------------------------------------- the closed form
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 1.0, 3.0])
def test_ipo_optimum_d1_closed_form(tau):
    torch.testing.assert_close(ipo_bandit_optimum(D1, beta=tau), d1_closed_form(tau), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_ipo_optimum_two_actions(tau):
    optimum = ipo_bandit_optimum([(0, 1)], beta=tau)
    assert abs(float(optimum[0]) - 1 / (1 + math.exp(-1 / (2 * tau)))) < 1e-6


def test_ipo_optimum_is_a_stationary_point_of_the_population_loss():
    prefs = [(0, 1), (1, 2), (0, 2), (3, 0), (2, 3), (0, 1)]  # a cycle and a repeated pair
    ref = torch.tensor([0.1, 0.2, 0.3, 0.4])
    optimum = ipo_bandit_optimum(prefs, beta=0.4, ref_probs=ref)
    theta = optimum.double().log().requires_grad_(True)
    logps = torch.log_softmax(theta, -1)
    w, l = torch.tensor([p[0] for p in prefs]), torch.tensor([p[1] for p in prefs])
    ref_logps = ref.double().log()
    population = PAIRWISE_LOSSES["ipo"](logps[w], logps[l], ref_logps[w], ref_logps[l], beta=0.4).mean()
    (grad,) = torch.autograd.grad(population, theta)
    assert grad.abs().max() < 1e-5
    # and it is a minimum: a random nudge never lowers the loss
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        nudged = torch.log_softmax(theta.detach() + 0.05 * torch.randn(4, generator=gen, dtype=torch.float64), -1)
        value = PAIRWISE_LOSSES["ipo"](nudged[w], nudged[l], ref_logps[w], ref_logps[l], beta=0.4).mean()
        assert value >= population - 1e-12


def test_ipo_optimum_shift_of_reference_log_ratio():
    # u = log pi - log ref does not depend on the reference: pi / ref has the same shape for any ref
    ref = torch.tensor([0.6, 0.3, 0.1])
    uniform_u = ipo_bandit_optimum(D1, beta=0.5).log()
    ref_u = ipo_bandit_optimum(D1, beta=0.5, ref_probs=ref).log() - ref.log()
    torch.testing.assert_close(uniform_u - uniform_u.mean(), ref_u - ref_u.mean(), atol=1e-5, rtol=0)


def test_ipo_optimum_rejects_disconnected_and_bad_input():
    with pytest.raises(ValueError, match="connect"):
        ipo_bandit_optimum([(0, 1), (1, 0)], beta=0.5, ref_probs=[0.3, 0.3, 0.4])  # the paper's D2 says nothing about c
    with pytest.raises(ValueError, match="beta"):
        ipo_bandit_optimum(D1, beta=0.0)
    with pytest.raises(ValueError, match="different actions"):
        ipo_bandit_optimum([(1, 1)], beta=0.5)
    with pytest.raises(ValueError, match="empty"):
        ipo_bandit_optimum([], beta=0.5)
    with pytest.raises(TypeError, match="preferences"):
        ipo_bandit_optimum([0, 1], beta=0.5)
    with pytest.raises(ValueError, match="ref_probs"):
        ipo_bandit_optimum(D1, beta=0.5, ref_probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        ipo_bandit_optimum(D1, beta=0.5, ref_probs=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="loss"):
        train_bandit(D1, loss="ppo", beta=0.5, steps=2)


# ----------------------------------------------------------------------------- KL
def test_bandit_kl():
    assert float(bandit_kl(torch.full((3,), 1 / 3))) == pytest.approx(0.0, abs=1e-7)
    p, ref = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.2, 0.3, 0.5])
    expected = float((p * (p / ref).log()).sum())
    assert float(bandit_kl(p, ref)) == pytest.approx(expected, rel=1e-6)
    torch_kl = torch.distributions.kl_divergence(
        torch.distributions.Categorical(p), torch.distributions.Categorical(ref)
    )
    assert float(bandit_kl(p, ref)) == pytest.approx(float(torch_kl), rel=1e-5)
    assert float(bandit_kl(torch.tensor([1.0, 0.0, 0.0]))) == pytest.approx(math.log(3), rel=1e-6)  # 0 log 0 = 0
    assert bandit_kl(torch.rand(4, 5, 3).softmax(-1)).shape == (4, 5)


# ----------------------------------------------------------------------------- the stored sweep
@pytest.fixture(scope="module")
def sweep():
    return load_d1_sweep()


def test_stored_sweep_layout(sweep):
    n_rec = D1_SWEEP["steps"] // D1_SWEEP["record_every"]
    assert sweep["probs"].shape == (len(D1_SWEEP["losses"]), len(D1_SWEEP["betas"]), len(D1_SWEEP["seeds"]), n_rec, 3)
    assert [tuple(p) for p in sweep["preferences"]] == list(D1)
    assert torch.allclose(sweep["probs"].sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("loss,beta,seed", [("ipo", 0.5, 3), ("dpo", 1.0, 0)])
def test_stored_sweep_matches_a_regenerated_slice(sweep, loss, beta, seed):
    steps = 2000  # the batches of a shorter run are a prefix of the full run's (same generator)
    again = train_bandit(D1, loss=loss, beta=beta, steps=steps, seed=seed)
    every = D1_SWEEP["record_every"]
    i, j, k = D1_SWEEP["losses"].index(loss), D1_SWEEP["betas"].index(beta), D1_SWEEP["seeds"].index(seed)
    stored = sweep["probs"][i, j, k, : steps // every]
    torch.testing.assert_close(stored, again[every - 1 :: every], atol=1e-5, rtol=1e-4)


def test_stored_sweep_ipo_reaches_optimum_and_dpo_goes_deterministic(sweep):
    ipo, dpo = D1_SWEEP["losses"].index("ipo"), D1_SWEEP["losses"].index("dpo")
    for j, tau in enumerate(D1_SWEEP["betas"]):
        final_ipo = sweep["probs"][ipo, j, :, -1].mean(0)
        assert (final_ipo - d1_closed_form(tau)).abs().max() < 0.03, tau
        if tau <= 1.0:
            assert float(sweep["probs"][dpo, j, :, -1, 0].mean()) > 0.99, tau
