"""The rank-loss explorer (notebook 18.1): RRHF (Yuan et al. 2023) on one prompt with K candidates, each with a
score p_i, a reward and a length, and the SFT weight lambda; from ``rrhf_loss_terms`` and autograd in float64.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ...maths.losses import rrhf_loss_terms
from .canvas import BlitFigure, explorer, slider, sliders, text_table

DEFAULT_SCORES: tuple[float, ...] = (-1.4, -0.9, -1.1, -0.5)
DEFAULT_REWARDS: tuple[int, ...] = (3, 2, 1, 0)
DEFAULT_LENGTHS: tuple[int, ...] = (4, 6, 3, 8)
SCORE_RANGE, REWARD_RANGE, LENGTH_RANGE = (-3.0, 0.0), (0, 5), (1, 12)
STATUS_ORDER = ("violated", "ordered", "tie")


@dataclass(frozen=True)
class PairRow:
    """One unordered pair, the lower-reward candidate first: ``status`` "violated" (it scores higher: adds
    ``hinge = gap = p_worse - p_better``), "ordered" (hinge 0) or "tie" (equal rewards: never counted)."""

    worse: int
    better: int
    gap: float
    hinge: float
    status: str


@dataclass(frozen=True)
class RankLossState:
    """The explorer at one setting (tuples of length K); gradients are on the summed log-probs ``logps``."""

    scores: tuple
    rewards: tuple
    lengths: tuple
    sft_weight: float
    logps: tuple  # |y_i| * p_i
    pairs: tuple
    best: int  # argmax of the rewards (the first on ties): the SFT term's target
    rank_loss: float
    sft_loss: float
    grad_rank: tuple  # dL_rank / dlogp_i
    grad_sft: tuple  # sft_weight * dL_ft / dlogp_i (only the best is non-zero)

    @property
    def loss(self) -> float:
        return self.rank_loss + self.sft_weight * self.sft_loss

    @property
    def grad(self) -> tuple:
        return tuple(a + b for a, b in zip(self.grad_rank, self.grad_sft))

    @property
    def n_violated(self) -> int:
        return sum(row.status == "violated" for row in self.pairs)


def _floats(name: str, values, k: int | None = None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from err
    if k is not None and len(out) != k:
        raise ValueError(f"{name} must have {k} entries (one per candidate, as candidate_scores), got {len(out)}")
    return out


def _pair(a: int, b: int, scores, rewards) -> PairRow:
    if rewards[a] == rewards[b]:
        return PairRow(a, b, scores[a] - scores[b], 0.0, "tie")
    worse, better = (a, b) if rewards[a] < rewards[b] else (b, a)
    gap = scores[worse] - scores[better]
    return PairRow(worse, better, gap, max(0.0, gap), "violated" if gap > 0 else "ordered")


def rank_loss_state(candidate_scores, candidate_rewards, candidate_lengths=DEFAULT_LENGTHS, *, sft_weight=1.0):
    """RRHF on one prompt: ``L = sum_{r_i < r_j} max(0, p_i - p_j) + sft_weight * (-logp_best)`` (Eqs. 2-5), with
    K scores ``p_i`` (the summed log-probs are ``logp_i = p_i |y_i|``), K rewards (only their order matters; ties never
    count), K lengths ``|y_i|`` > 0 and lambda = ``sft_weight`` >= 0. Returns a :class:`RankLossState`."""
    scores = _floats("candidate_scores", candidate_scores)
    k = len(scores)
    if k < 2:
        raise ValueError(f"candidate_scores must hold K >= 2 candidates, got {k}")
    rewards = _floats("candidate_rewards", candidate_rewards, k)
    lengths = _floats("candidate_lengths", candidate_lengths, k)
    if not min(lengths) > 0:
        raise ValueError(f"candidate_lengths must all be > 0, got {lengths}")
    if not float(sft_weight) >= 0:
        raise ValueError(f"sft_weight must be >= 0, got {sft_weight!r}")
    length_t = torch.tensor([lengths], dtype=torch.float64)  # (1, K)
    logps = (torch.tensor([scores], dtype=torch.float64) * length_t).requires_grad_(True)  # (1, K) summed
    rank, sft = rrhf_loss_terms(logps, length_t, torch.tensor([rewards], dtype=torch.float64))  # (1,), (1,)
    (grad_rank,) = torch.autograd.grad(rank.sum(), logps, retain_graph=True)
    (grad_sft,) = torch.autograd.grad(sft.sum(), logps)
    pairs = [_pair(a, b, scores, rewards) for a, b in itertools.combinations(range(k), 2)]
    pairs.sort(key=lambda r: (STATUS_ORDER.index(r.status), -r.hinge, r.worse, r.better))
    return RankLossState(
        scores, rewards, lengths, float(sft_weight), tuple(logps[0].tolist()), tuple(pairs),
        max(range(k), key=lambda i: (rewards[i], -i)), rank.item(), sft.item(),
        tuple((grad_rank[0] + 0.0).tolist()), tuple((float(sft_weight) * grad_sft[0] + 0.0).tolist()),
    )  # fmt: skip


def _name(i: int, state: RankLossState | None = None) -> str:
    return f"y{i + 1}" + (" (best)" if state is not None and i == state.best else "")


PAIR_HEADER = ["pair (worse, better)", "p_i - p_j", "max(0, p_i - p_j)", "status"]
CANDIDATE_HEADER = ["candidate", "reward", "p_i", "|y_i|", "logp_i", "dL_rank/dlogp", "lambda dL_ft/dlogp"]


def pairs_table_text(state: RankLossState) -> str:
    """The pair table (violated pairs first), the loss, and each candidate's gradients."""
    pairs = [
        [f"{_name(r.worse)} {'=' if r.status == 'tie' else '<'} {_name(r.better)}", f"{r.gap:+.2f}", f"{r.hinge:.2f}"]
        + [r.status]
        for r in state.pairs
    ]
    numbers = zip(state.rewards, state.scores, state.lengths, state.logps, state.grad_rank, state.grad_sft)
    candidates = [
        [_name(i, state), f"{r:g}", f"{p:+.2f}", f"{n:g}", f"{logp:+.2f}", f"{g_rank:+.3f}", f"{g_sft:+.3f}"]
        for i, (r, p, n, logp, g_rank, g_sft) in enumerate(numbers)
    ]
    summary = (
        f"L_rank = {state.rank_loss:.2f} from {state.n_violated} violated pair(s); L_ft = {state.sft_loss:.2f} "
        f"(on {_name(state.best)}); L = L_rank + {state.sft_weight:g} L_ft = {state.loss:.2f}"
    )
    return "\n".join([text_table(PAIR_HEADER, pairs), summary, text_table(CANDIDATE_HEADER, candidates)])


class RankLossFigure(BlitFigure):
    """Left: each candidate at (reward, score); a red segment joins every violated pair, a grey dotted one every
    ordered pair. Right: the push ``-dL/dlogp_i`` on each summed log-prob, stacked: L_rank (red), SFT (green)."""

    def __init__(self, k: int, *, figsize=(8.5, 3.2), dpi: int = 80):
        super().__init__(figsize=figsize, dpi=dpi)
        self.k = k
        ax, self.ax_push = self.fig.subplots(1, 2, width_ratios=[1.2, 1.0])
        self.pair_lines = {pair: ax.plot([], [], zorder=1)[0] for pair in itertools.combinations(range(k), 2)}
        self.points = ax.scatter([0.0] * k, [0.0] * k, s=60, color="tab:blue", zorder=2)
        self.labels = [ax.annotate("", (0, 0), textcoords="offset points", xytext=(6, 4)) for _ in range(k)]
        ax.plot([], [], color="tab:red", lw=2, label="violated pair (adds p_i - p_j)")
        ax.plot([], [], color="0.6", lw=0.8, ls=":", label="ordered pair (adds 0)")
        ax.legend(loc="lower right", fontsize=7)
        ax.set(xlabel="reward r_i", ylabel="score p_i (mean log-prob)")
        ax.set(xlim=(REWARD_RANGE[0] - 0.5, REWARD_RANGE[1] + 1.5), ylim=(SCORE_RANGE[0] - 0.2, SCORE_RANGE[1] + 0.2))
        self.title = ax.set_title(" ", fontsize=9)
        self.rank_bars = self.ax_push.bar(range(k), [0.0] * k, color="tab:red", label="L_rank")
        self.sft_bars = self.ax_push.bar(range(k), [0.0] * k, color="tab:green", label="lambda L_ft")
        self.ax_push.axhline(0.0, color="k", lw=0.8)
        self.ax_push.set_xticks(range(k), [_name(i) for i in range(k)])
        self.ax_push.set(ylabel="push -dL/dlogp_i (> 0: up)", title="on each summed log-prob", ylim=(-1, 1))
        self.ax_push.legend(loc="lower left", fontsize=7)
        self.freeze([*self.pair_lines.values(), self.points, *self.labels, self.title, *self.rank_bars, *self.sft_bars])

    def update(self, state: RankLossState) -> None:
        if len(state.scores) != self.k:
            raise ValueError(f"the figure was built for K = {self.k} candidates, got {len(state.scores)}")
        status = {(min(r.worse, r.better), max(r.worse, r.better)): r.status for r in state.pairs}
        for (a, b), line in self.pair_lines.items():
            line.set_data([state.rewards[a], state.rewards[b]], [state.scores[a], state.scores[b]])
            line.set_visible(status[a, b] != "tie")
            line.set(**({"color": "tab:red", "lw": 2.0, "ls": "-"} if status[a, b] == "violated" else
                        {"color": "0.6", "lw": 0.8, "ls": ":"}))  # fmt: skip
        self.points.set_offsets(list(zip(state.rewards, state.scores)))
        for i, text in enumerate(self.labels):
            text.xy = (state.rewards[i], state.scores[i])
            text.set_text(f"{_name(i, state)}, {state.lengths[i]:g} tokens")
        self.title.set_text(f"L_rank = {state.rank_loss:.2f} ({state.n_violated} red pairs), L = {state.loss:.2f}")
        for i in range(self.k):
            self.rank_bars[i].set_height(-state.grad_rank[i])
            self.sft_bars[i].set_y(-state.grad_rank[i])
            self.sft_bars[i].set_height(-state.grad_sft[i])
        self.fit_ylim(self.ax_push, max(abs(a) + abs(b) for a, b in zip(state.grad_rank, state.grad_sft)))


def build_rank_loss_widget(scores=DEFAULT_SCORES, rewards=DEFAULT_REWARDS, lengths=DEFAULT_LENGTHS, *, sft_weight=1.0):
    """The rank-loss explorer: K sliders each for the scores, rewards and lengths, and one for lambda.

    Returns an ``ipywidgets.VBox`` with ``score_sliders``, ``reward_sliders``, ``length_sliders``,
    ``sft_weight_slider``, ``readout`` (:func:`pairs_table_text`), ``image``, ``state`` and ``redraw_ms``.
    """
    import ipywidgets as widgets

    k = len(scores)
    if len(rewards) != k or len(lengths) != k:
        raise ValueError(
            f"scores, rewards and lengths must have the same length, got {k}, {len(rewards)}, {len(lengths)}"
        )
    score_sliders = sliders("FloatSlider", "p_{i}", scores, min=SCORE_RANGE[0], max=SCORE_RANGE[1], step=0.05)
    reward_sliders = sliders("IntSlider", "r_{i}", rewards, min=REWARD_RANGE[0], max=REWARD_RANGE[1])
    length_sliders = sliders("IntSlider", "|y_{i}|", lengths, min=LENGTH_RANGE[0], max=LENGTH_RANGE[1])
    sft_weight_slider = slider("FloatSlider", "lambda (sft_weight)", sft_weight, min=0.0, max=3.0, step=0.05)

    def compute():
        values = [[s.value for s in group] for group in (score_sliders, reward_sliders, length_sliders)]
        return rank_loss_state(*values, sft_weight=sft_weight_slider.value)

    titles = ("scores p_i", "rewards r_i (order only)", "lengths")
    columns = zip(titles, (score_sliders, reward_sliders, length_sliders))
    rows = [widgets.HBox([widgets.VBox([widgets.Label(t), *group]) for t, group in columns]), sft_weight_slider]
    controls = [*score_sliders, *reward_sliders, *length_sliders, sft_weight_slider]
    return explorer(
        rows, controls, compute, RankLossFigure(k), pairs_table_text, score_sliders=score_sliders,
        reward_sliders=reward_sliders, length_sliders=length_sliders, sft_weight_slider=sft_weight_slider,
    )  # fmt: skip
