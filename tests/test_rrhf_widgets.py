"""Notebook 18.1's rank-loss explorer, headless: the pure callback against the library, its tables and figure,
and the widget driven by setting its score, reward, length and lambda sliders."""

import itertools

import pytest
import torch

from course_lib.maths.losses import rrhf_loss
from course_lib.teaching.widgets.rank_loss import (
    DEFAULT_LENGTHS,
    DEFAULT_REWARDS,
    DEFAULT_SCORES,
    RankLossFigure,
    build_rank_loss_widget,
    pairs_table_text,
    rank_loss_state,
)


def plot_rank_state(state):
    figure = RankLossFigure(len(state.scores))
    figure.update(state)
    return figure.static()


CASES = [
    (DEFAULT_SCORES, DEFAULT_REWARDS, DEFAULT_LENGTHS, 1.0),
    ((-0.3, -0.9, -1.7, -2.2), (3, 2, 1, 0), (5, 5, 5, 5), 0.0),  # perfectly ordered, no SFT term
    ((-1.0, -0.4, -0.6, -2.0), (1, 1, 4, 0), (2, 9, 3, 4), 2.5),  # a tie in reward
    ((-0.2, -2.9), (0, 5), (1, 12), 0.3),  # K = 2
]


@pytest.mark.parametrize("scores, rewards, lengths, sft_weight", CASES)
def test_state_matches_the_library_loss_and_its_gradient(scores, rewards, lengths, sft_weight):
    state = rank_loss_state(scores, rewards, lengths, sft_weight=sft_weight)
    logps = torch.tensor([[s * n for s, n in zip(scores, lengths)]], dtype=torch.float64, requires_grad=True)
    length_t, reward_t = torch.tensor([lengths], dtype=torch.float64), torch.tensor([rewards], dtype=torch.float64)
    loss = rrhf_loss(logps, length_t, reward_t, sft_weight=sft_weight)
    (grad,) = torch.autograd.grad(loss.sum(), logps)
    assert state.loss == pytest.approx(loss.item(), abs=1e-12)
    assert state.grad == pytest.approx(grad[0].tolist(), abs=1e-12)
    # closed form: L_rank's push is the count of violated pairs divided by the length; SFT gives -lambda to the best
    k = len(scores)
    counts = [
        sum(rewards[i] < rewards[j] and scores[i] > scores[j] for j in range(k))
        - sum(rewards[j] < rewards[i] and scores[j] > scores[i] for j in range(k))
        for i in range(k)
    ]
    assert state.grad_rank == pytest.approx([c / n for c, n in zip(counts, lengths)])
    assert state.grad_sft == pytest.approx([-sft_weight if i == state.best else 0.0 for i in range(k)])


def test_pairs_cover_every_unordered_pair_once_and_ties_never_count():
    scores, rewards = (-1.0, -0.4, -0.6, -2.0), (1, 1, 4, 0)
    state = rank_loss_state(scores, rewards, (2, 9, 3, 4))
    assert sorted(tuple(sorted((r.worse, r.better))) for r in state.pairs) == list(itertools.combinations(range(4), 2))
    for row in state.pairs:
        assert row.status == "tie" or rewards[row.worse] < rewards[row.better]
        assert row.hinge == (0.0 if row.status == "tie" else pytest.approx(max(0.0, row.gap)))
    assert state.rank_loss == pytest.approx(sum(r.hinge for r in state.pairs))
    tie = rank_loss_state((-0.1, -2.5), (2, 2), (3, 3))
    assert tie.rank_loss == 0.0 and tie.grad_rank == (0.0, 0.0) and [r.status for r in tie.pairs] == ["tie"]


def test_lengths_and_lambda_change_the_gradient_not_the_ranking():
    short = rank_loss_state(DEFAULT_SCORES, DEFAULT_REWARDS, (4, 6, 3, 8))
    long = rank_loss_state(DEFAULT_SCORES, DEFAULT_REWARDS, (4, 6, 3, 16), sft_weight=2.0)
    assert long.rank_loss == short.rank_loss and long.n_violated == short.n_violated
    assert long.grad_rank[3] == pytest.approx(short.grad_rank[3] / 2)  # twice as long: half the push per nat
    assert long.grad_sft[0] == 2 * short.grad_sft[0]
    assert long.sft_loss == short.sft_loss and long.loss == pytest.approx(short.rank_loss + 2 * short.sft_loss)


def test_inputs_are_not_mutated_and_only_the_order_of_rewards_matters():
    scores, rewards = [-1.4, -0.9, -1.1, -0.5], torch.tensor([3.0, 2.0, 1.0, 0.0])
    a = rank_loss_state(scores, rewards)
    assert scores == [-1.4, -0.9, -1.1, -0.5] and torch.equal(rewards, torch.tensor([3.0, 2.0, 1.0, 0.0]))
    b = rank_loss_state(scores, (40.0, 7.5, -1.0, -9.0))
    assert (a.rank_loss, a.sft_loss, a.grad) == (b.rank_loss, b.sft_loss, b.grad)


@pytest.mark.parametrize(
    "args, kwargs, error, name",
    [
        (((-1.0,), (1,), (1,)), {}, ValueError, "candidate_scores"),
        (((-1.0, -2.0), (1, 2, 3), (1, 1)), {}, ValueError, "candidate_rewards"),
        (((-1.0, -2.0), (1, 2), (1, 0)), {}, ValueError, "candidate_lengths"),
        ((5, (1, 2), (1, 1)), {}, TypeError, "candidate_scores"),
        (((-1.0, -2.0), (1, 2), (1, 1)), {"sft_weight": -1.0}, ValueError, "sft_weight"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(args, kwargs, error, name):
    with pytest.raises(error, match=name):
        rank_loss_state(*args, **kwargs)


def test_tables_and_figure_show_the_state():
    state = rank_loss_state(DEFAULT_SCORES, DEFAULT_REWARDS)
    text = pairs_table_text(state)
    assert f"L_rank = {state.rank_loss:.2f}" in text and f"L = L_rank + 1 L_ft = {state.loss:.2f}" in text
    assert sum(line.endswith("violated") for line in text.splitlines()) == state.n_violated and "-0.00" not in text
    ax_scores, ax_push = plot_rank_state(state).axes
    red = [line for line in ax_scores.get_lines() if line.get_visible() and len(line.get_xdata()) == 2]
    assert sum(line.get_color() == "tab:red" for line in red) == state.n_violated
    heights = [bar.get_height() for bar in ax_push.patches[: len(state.scores)]]
    assert heights == pytest.approx([-g for g in state.grad_rank])
    assert ax_push.get_ylim()[1] >= max(abs(g) for g in state.grad)


def test_widget_redraws_when_any_slider_moves():
    box = build_rank_loss_widget()
    assert box.state.scores == DEFAULT_SCORES and bytes(box.image.value).startswith(b"\x89PNG")
    for slider, value in zip(box.score_sliders, (-0.3, -0.9, -1.7, -2.2)):
        slider.value = value
    assert box.state.rank_loss == 0.0 and box.state.n_violated == 0
    table, image = box.readout.value, bytes(box.image.value)
    box.reward_sliders[3].value = 5  # y4 becomes the best
    assert box.state.best == 3 and box.state.rank_loss > 0 and box.readout.value != table
    box.length_sliders[3].value = 12
    assert box.state.lengths[3] == 12 and box.state.sft_loss == pytest.approx(2.2 * 12)
    box.sft_weight_slider.value = 0.0
    assert box.state.grad_sft == (0.0, 0.0, 0.0, 0.0) and bytes(box.image.value) != image
    with pytest.raises(ValueError, match="same length"):
        build_rank_loss_widget(scores=(-1.0, -2.0), rewards=(1, 2, 3), lengths=(1, 1))
