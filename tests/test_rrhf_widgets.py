"""Headless tests of the RRHF rank-loss explorer (notebook 18.1): the pure callback, its text/HTML
views, the figure, and the ipywidgets builder driven by setting slider values."""

import itertools

import pytest
import torch

from course_lib.maths.losses import rrhf_loss, rrhf_loss_terms
from course_lib.teaching.widgets.rank_loss import (
    DEFAULT_LENGTHS,
    DEFAULT_REWARDS,
    DEFAULT_SCORES,
    RankLossFigure,
    build_rank_loss_widget,
    pairs_table_html,
    pairs_table_text,
    plot_rank_state,
    rank_loss_state,
)


def _library_terms(scores, rewards, lengths):
    """rank, sft and their gradients w.r.t. the scores, straight from the library and autograd."""
    score_t = torch.tensor([scores], dtype=torch.float64, requires_grad=True)
    length_t = torch.tensor([lengths], dtype=torch.float64)
    rank, sft = rrhf_loss_terms(score_t * length_t, length_t, torch.tensor([rewards], dtype=torch.float64))
    (g_rank,) = torch.autograd.grad(rank.sum(), score_t, retain_graph=True)
    (g_sft,) = torch.autograd.grad(sft.sum(), score_t)
    return rank.item(), sft.item(), g_rank[0].tolist(), g_sft[0].tolist()


def _counting_gradient(scores, rewards):
    """Closed form of dL_rank/dp_i: +1 for each better-rewarded j it outscores, -1 for each worse j outscoring it."""
    k = len(scores)
    return [
        sum(1.0 for j in range(k) if rewards[i] < rewards[j] and scores[i] > scores[j])
        - sum(1.0 for j in range(k) if rewards[j] < rewards[i] and scores[j] > scores[i])
        for i in range(k)
    ]


CASES = [
    (DEFAULT_SCORES, DEFAULT_REWARDS, DEFAULT_LENGTHS),
    ((-0.3, -0.9, -1.7, -2.2), (3, 2, 1, 0), (5, 5, 5, 5)),  # perfectly ordered
    ((-1.0, -0.4, -0.6, -2.0), (1, 1, 4, 0), (2, 9, 3, 4)),  # a tie in reward
    ((-0.2, -2.9), (0, 5), (1, 12)),  # K = 2
]


@pytest.mark.parametrize("scores, rewards, lengths", CASES)
def test_state_matches_library_and_autograd(scores, rewards, lengths):
    state = rank_loss_state(scores, rewards, lengths, sft_weight=1.0, learning_rate=0.1)
    rank, sft, g_rank, g_sft = _library_terms(scores, rewards, lengths)
    assert state.rank_loss == pytest.approx(rank, abs=1e-12)
    assert state.sft_loss == pytest.approx(sft, abs=1e-12)
    assert state.loss == pytest.approx(rank + sft, abs=1e-12)
    assert state.grad_rank == pytest.approx(g_rank, abs=1e-12)
    assert state.grad_sft == pytest.approx(g_sft, abs=1e-12)
    assert state.update == pytest.approx([-0.1 * (a + b) for a, b in zip(g_rank, g_sft)], abs=1e-12)
    # and with the full library loss on the summed log-probs
    logps = torch.tensor([[s * n for s, n in zip(scores, lengths)]], dtype=torch.float64)
    full = rrhf_loss(logps, torch.tensor([lengths], dtype=torch.float64), torch.tensor([rewards], dtype=torch.float64))
    assert state.loss == pytest.approx(full.item(), abs=1e-12)


@pytest.mark.parametrize("scores, rewards, lengths", CASES)
def test_gradient_closed_form_and_finite_differences(scores, rewards, lengths):
    state = rank_loss_state(scores, rewards, lengths, sft_weight=0.5)
    assert state.grad_rank == pytest.approx(_counting_gradient(scores, rewards))
    best = state.best
    assert state.grad_sft == pytest.approx([-0.5 * lengths[i] if i == best else 0.0 for i in range(len(scores))])
    eps = 1e-6
    for i in range(len(scores)):
        up = list(scores)
        up[i] += eps
        down = list(scores)
        down[i] -= eps
        fd = (
            rank_loss_state(up, rewards, lengths, sft_weight=0.5).loss
            - rank_loss_state(down, rewards, lengths, sft_weight=0.5).loss
        ) / (2 * eps)
        assert fd == pytest.approx(state.grad[i], abs=1e-5)


def test_pairs_cover_every_unordered_pair_once():
    scores, rewards = (-1.0, -0.4, -0.6, -2.0), (1, 1, 4, 0)
    state = rank_loss_state(scores, rewards, (2, 9, 3, 4))
    seen = sorted(tuple(sorted((r.worse, r.better))) for r in state.pairs)
    assert seen == list(itertools.combinations(range(4), 2))
    for row in state.pairs:
        if row.status == "tie":
            assert rewards[row.worse] == rewards[row.better] and row.hinge == 0.0
        else:
            assert rewards[row.worse] < rewards[row.better]
            assert row.gap == pytest.approx(scores[row.worse] - scores[row.better])
            assert row.hinge == pytest.approx(max(0.0, row.gap))
            assert (row.status == "violated") == (row.gap > 0)
    assert state.rank_loss == pytest.approx(sum(r.hinge for r in state.pairs))
    assert state.n_violated == sum(r.hinge > 0 for r in state.pairs)


def test_ties_in_reward_are_never_penalised():
    state = rank_loss_state((-0.1, -2.5), (2, 2), (3, 3))
    assert state.rank_loss == 0.0 and state.grad_rank == (0.0, 0.0)
    assert [r.status for r in state.pairs] == ["tie"]


def test_ordered_scores_give_zero_rank_loss_and_gradient():
    state = rank_loss_state((-0.3, -0.9, -1.7, -2.2), (3, 2, 1, 0), (5, 5, 5, 5))
    assert state.rank_loss == 0.0 and state.n_violated == 0
    assert state.grad_rank == (0.0, 0.0, 0.0, 0.0)
    assert state.update == pytest.approx((0.5, 0.0, 0.0, 0.0))  # only the SFT term pushes, on the best


def test_only_the_order_of_rewards_matters():
    a = rank_loss_state(DEFAULT_SCORES, (3, 2, 1, 0))
    b = rank_loss_state(DEFAULT_SCORES, (40.0, 7.5, -1.0, -9.0))
    assert (a.rank_loss, a.sft_loss, a.grad) == (b.rank_loss, b.sft_loss, b.grad)


def test_inputs_are_not_mutated_and_tensors_accepted():
    scores = [-1.4, -0.9, -1.1, -0.5]
    rewards = torch.tensor([3.0, 2.0, 1.0, 0.0])
    before = (list(scores), rewards.clone())
    state = rank_loss_state(scores, rewards)
    assert scores == before[0] and torch.equal(rewards, before[1])
    assert state.rewards == (3.0, 2.0, 1.0, 0.0)


@pytest.mark.parametrize(
    "args, error",
    [
        (((-1.0,), (1,), (1,)), ValueError),  # K = 1
        (((-1.0, -2.0), (1, 2, 3), (1, 1)), ValueError),  # rewards of the wrong length
        (((-1.0, -2.0), (1, 2), (1, 0)), ValueError),  # a zero length
        ((5, (1, 2), (1, 1)), TypeError),  # not a sequence
    ],
)
def test_bad_inputs_raise_naming_the_argument(args, error):
    with pytest.raises(error, match="candidate_"):
        rank_loss_state(*args)


def test_text_and_html_views_show_the_numbers():
    state = rank_loss_state(DEFAULT_SCORES, DEFAULT_REWARDS)
    text = pairs_table_text(state)
    assert f"L_rank = {state.rank_loss:.2f}" in text and f"L = {state.loss:.2f}" in text
    assert sum(line.endswith("violated") for line in text.splitlines()) == state.n_violated
    assert "-0.00" not in text
    page = pairs_table_html(state)
    assert f"L_rank = {state.rank_loss:.2f}" in page and page.count("<tr") == len(state.pairs) + len(state.scores) + 2


def test_figure_draws_violated_pairs_in_red():
    state = rank_loss_state(DEFAULT_SCORES, DEFAULT_REWARDS)
    fig = plot_rank_state(state)
    ax_scores, ax_update = fig.axes
    red = [line for line in ax_scores.get_lines() if line.get_visible() and line.get_color() == "tab:red"]
    assert len(red) == state.n_violated
    heights = [bar.get_height() for bar in ax_update.patches[: len(state.scores)]]
    assert heights == pytest.approx([-0.1 * g for g in state.grad_rank])
    png = RankLossFigure(4)
    png.update(state)
    assert png.png().startswith(b"\x89PNG")


def test_widget_redraws_when_sliders_move():
    box = build_rank_loss_widget()
    assert box.state.scores == DEFAULT_SCORES and box.state.rewards == tuple(map(float, DEFAULT_REWARDS))
    first_table, first_image = box.table.value, bytes(box.image.value)
    assert first_image.startswith(b"\x89PNG") and "L_rank" in first_table

    # order the scores like the rewards: every pair satisfied, only the SFT term is left
    for slider, value in zip(box.score_sliders, (-0.3, -0.9, -1.7, -2.2)):
        slider.value = value
    assert box.state.scores == pytest.approx((-0.3, -0.9, -1.7, -2.2))
    assert box.state.rank_loss == 0.0 and box.state.n_violated == 0
    assert box.table.value != first_table and bytes(box.image.value) != first_image

    # make y4 (the worst) the best: the rank loss, table and gradients follow the library
    box.reward_sliders[3].value = 5
    scores = [s.value for s in box.score_sliders]
    rewards = [r.value for r in box.reward_sliders]
    rank, sft, g_rank, g_sft = _library_terms(scores, rewards, DEFAULT_LENGTHS)
    assert box.state.best == 3
    assert box.state.rank_loss == pytest.approx(rank) and rank > 0
    assert box.state.sft_loss == pytest.approx(sft)
    assert box.state.grad_rank == pytest.approx(g_rank)
    assert box.state.grad_sft == pytest.approx(g_sft)
    assert f"L_rank = {rank:.2f}" in box.table.value


def test_widget_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        build_rank_loss_widget(scores=(-1.0, -2.0), rewards=(1, 2, 3), lengths=(1, 1))
