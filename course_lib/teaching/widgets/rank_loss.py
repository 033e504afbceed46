"""The widgets and plots of notebook 18.1 (RRHF), as pure callbacks plus thin ipywidgets builders.

The rank-loss explorer (Sec. 4 of the notebook) shows RRHF's ranking term on one prompt with K
candidates. The learner moves each candidate's score ``p_i`` (its length-normalised log-probability,
Yuan et al. 2023, Eq. 1) and its reward; the callback :func:`rank_loss_state` returns every pair,
which pairs contribute ``max(0, p_i - p_j)`` (Eq. 2), the loss, and each candidate's gradient and
update. All the maths comes from :func:`course_lib.maths.losses.rrhf_loss_terms` and autograd; this module
only arranges and draws it. Nothing here mutates its inputs.

The figure is a :class:`~course_lib.teaching.widgets.canvas.BlitFigure`: each redraw renders it into an
``ipywidgets.Image`` (PNG), so the widget works the same in JupyterLab, in a static notebook viewer and
in a headless test.
"""

from __future__ import annotations

import html
import itertools
import time
from dataclasses import dataclass

import torch

from ...maths.losses import rrhf_loss_terms
from .canvas import BlitFigure

DEFAULT_SCORES: tuple[float, ...] = (-1.4, -0.9, -1.1, -0.5)
DEFAULT_REWARDS: tuple[int, ...] = (3, 2, 1, 0)
DEFAULT_LENGTHS: tuple[int, ...] = (4, 6, 3, 8)
SCORE_RANGE: tuple[float, float] = (-3.0, 0.0)
REWARD_RANGE: tuple[int, int] = (0, 5)


@dataclass(frozen=True)
class PairRow:
    """One unordered pair of candidates, written with the lower-reward one first when rewards differ.

    ``status`` is ``"violated"`` (the worse candidate scores higher: it adds ``hinge = p_i - p_j``
    to the loss), ``"ordered"`` (hinge 0) or ``"tie"`` (equal rewards: never counted, Eq. 2).
    """

    worse: int
    better: int
    worse_reward: float
    better_reward: float
    gap: float  # p_worse - p_better
    hinge: float  # max(0, gap) for ordered rewards, 0 for ties
    status: str


@dataclass(frozen=True)
class RankLossState:
    """Everything the rank-loss explorer shows, for one setting of the sliders (all tuples of length K)."""

    scores: tuple[float, ...]
    rewards: tuple[float, ...]
    lengths: tuple[int, ...]
    pairs: tuple[PairRow, ...]
    best: int  # argmax of the rewards (first one on ties), the target of the SFT term
    rank_loss: float
    sft_loss: float
    loss: float  # rank_loss + sft_weight * sft_loss
    grad_rank: tuple[float, ...]  # dL_rank / dp_i
    grad_sft: tuple[float, ...]  # sft_weight * dL_ft / dp_i (only the best candidate is non-zero)
    grad: tuple[float, ...]  # dL / dp_i
    update: tuple[float, ...]  # -learning_rate * dL / dp_i, one gradient step on the scores
    sft_weight: float
    learning_rate: float

    @property
    def n_violated(self) -> int:
        return sum(row.status == "violated" for row in self.pairs)


def _as_floats(name: str, values, k: int | None = None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from err
    if k is not None and len(out) != k:
        raise ValueError(f"{name} must have {k} entries (one per candidate), got {len(out)}")
    return out


def rank_loss_state(
    candidate_scores,
    candidate_rewards,
    candidate_lengths=DEFAULT_LENGTHS,
    *,
    sft_weight: float = 1.0,
    learning_rate: float = 0.1,
) -> RankLossState:
    """RRHF on one prompt: ``L = sum_{r_i < r_j} max(0, p_i - p_j) + sft_weight * (-|y_best| * p_best)``.

    Eq. 2 (rank) and Eqs. 3-5 (SFT) of Yuan et al. 2023, with the scores ``p_i`` given directly (the
    sliders). The summed log-prob that the SFT term sees is ``logp_i = p_i * |y_i|`` (Eq. 1 read
    backwards), so ``dL_ft/dp_best = -|y_best|``. Computed with :func:`rrhf_loss_terms` and autograd
    in float64.

    Args:
        candidate_scores: K numbers, the length-normalised log-probs ``p_i``.
        candidate_rewards: K numbers; only their order matters, ties are never penalised.
        candidate_lengths: K positive token counts ``|y_i|``.
        sft_weight: weight of the SFT term (the paper's Eq. 5 uses 1).
        learning_rate: step size used for ``update = -learning_rate * grad``.

    Returns:
        A :class:`RankLossState`.
    """
    scores = _as_floats("candidate_scores", candidate_scores)
    k = len(scores)
    if k < 2:
        raise ValueError(f"candidate_scores must hold K >= 2 candidates, got {k}")
    rewards = _as_floats("candidate_rewards", candidate_rewards, k)
    lengths = tuple(int(n) for n in _as_floats("candidate_lengths", candidate_lengths, k))
    if min(lengths) <= 0:
        raise ValueError(f"candidate_lengths must all be > 0, got {lengths}")

    score_t = torch.tensor([scores], dtype=torch.float64, requires_grad=True)  # (1, K)
    length_t = torch.tensor([lengths], dtype=torch.float64)  # (1, K)
    reward_t = torch.tensor([rewards], dtype=torch.float64)  # (1, K)
    candidate_logps = score_t * length_t  # (1, K) summed log-probs
    rank, sft = rrhf_loss_terms(candidate_logps, length_t, reward_t)  # (1,), (1,)
    (grad_rank,) = torch.autograd.grad(rank.sum(), score_t, retain_graph=True)
    (grad_sft,) = torch.autograd.grad(sft.sum(), score_t)
    grad_rank = grad_rank[0].tolist()
    grad_sft = [sft_weight * g for g in grad_sft[0].tolist()]
    grad = [a + b for a, b in zip(grad_rank, grad_sft)]
    update = [-learning_rate * g + 0.0 for g in grad]  # + 0.0 turns -0.0 into 0.0

    pairs = []
    for a, b in itertools.combinations(range(k), 2):
        if rewards[a] == rewards[b]:
            pairs.append(PairRow(a, b, rewards[a], rewards[b], scores[a] - scores[b], 0.0, "tie"))
            continue
        worse, better = (a, b) if rewards[a] < rewards[b] else (b, a)
        gap = scores[worse] - scores[better]
        pairs.append(
            PairRow(
                worse, better, rewards[worse], rewards[better], gap, max(0.0, gap), "violated" if gap > 0 else "ordered"
            )
        )
    pairs.sort(key=lambda row: ({"violated": 0, "ordered": 1, "tie": 2}[row.status], -row.hinge, row.worse, row.better))

    rank_loss, sft_loss = float(rank.detach()), float(sft.detach())
    return RankLossState(
        scores=scores,
        rewards=rewards,
        lengths=lengths,
        pairs=tuple(pairs),
        best=max(range(k), key=lambda i: (rewards[i], -i)),
        rank_loss=rank_loss,
        sft_loss=sft_loss,
        loss=rank_loss + sft_weight * sft_loss,
        grad_rank=tuple(grad_rank),
        grad_sft=tuple(grad_sft),
        grad=tuple(grad),
        update=tuple(update),
        sft_weight=float(sft_weight),
        learning_rate=float(learning_rate),
    )


def _label(i: int) -> str:
    return f"y{i + 1}"


def pairs_table_text(state: RankLossState, *, digits: int = 2) -> str:
    """The pair table and the per-candidate gradients as plain text (for printed, checked outputs)."""
    f = f"{{:+.{digits}f}}"
    lines = ["pair (worse < better)   r_i  r_j   p_i - p_j   max(0, p_i - p_j)   status"]
    for row in state.pairs:
        sep = "=" if row.status == "tie" else "<"
        lines.append(
            f"{_label(row.worse):>3} {sep} {_label(row.better):<3}            "
            f"{row.worse_reward:4g} {row.better_reward:4g}"
            f"   {f.format(row.gap):>9}   {row.hinge:17.{digits}f}   {row.status}"
        )
    lines.append(
        f"L_rank = {state.rank_loss:.{digits}f} from {state.n_violated} violated pair(s);"
        f" L_ft = {state.sft_loss:.{digits}f} (on {_label(state.best)});"
        f" L = {state.loss:.{digits}f}"
    )
    lines.append("candidate   p_i    |y_i|  dL_rank/dp  dL_ft/dp  update -lr*dL/dp")
    for i in range(len(state.scores)):
        lines.append(
            f"{_label(i):>9} {state.scores[i]:+.{digits}f} {state.lengths[i]:6d}  {f.format(state.grad_rank[i]):>10}"
            f"  {f.format(state.grad_sft[i]):>8}  {f.format(state.update[i]):>10}"
        )
    return "\n".join(lines)


_STATUS_COLOUR = {"violated": "#fde0dd", "ordered": "#e5f5e0", "tie": "#f0f0f0"}


def pairs_table_html(state: RankLossState, *, digits: int = 2) -> str:
    """The same content as :func:`pairs_table_text`, as two small HTML tables for an ``HTML`` widget."""
    f = f"{{:+.{digits}f}}"
    cell = 'style="padding:1px 8px;text-align:right"'
    rows = []
    for row in state.pairs:
        sep = "=" if row.status == "tie" else "&lt;"
        rows.append(
            f'<tr style="background:{_STATUS_COLOUR[row.status]}">'
            f"<td {cell}>{_label(row.worse)} {sep} {_label(row.better)}</td>"
            f"<td {cell}>{row.worse_reward:g}</td><td {cell}>{row.better_reward:g}</td>"
            f"<td {cell}>{f.format(row.gap)}</td><td {cell}>{row.hinge:.{digits}f}</td>"
            f"<td {cell}>{html.escape(row.status)}</td></tr>"
        )
    pair_table = (
        "<table><tr><th>pair</th><th>r_i</th><th>r_j</th><th>p_i &minus; p_j</th>"
        "<th>max(0, p_i &minus; p_j)</th><th></th></tr>" + "".join(rows) + "</table>"
    )
    cand_rows = []
    for i in range(len(state.scores)):
        mark = " (best)" if i == state.best else ""
        cand_rows.append(
            f"<tr><td {cell}>{_label(i)}{mark}</td><td {cell}>{state.scores[i]:+.{digits}f}</td>"
            f"<td {cell}>{state.lengths[i]}</td>"
            f"<td {cell}>{f.format(state.grad_rank[i])}</td><td {cell}>{f.format(state.grad_sft[i])}</td>"
            f"<td {cell}>{f.format(state.update[i])}</td></tr>"
        )
    cand_table = (
        "<table><tr><th>candidate</th><th>p_i</th><th>|y_i|</th><th>&part;L_rank/&part;p_i</th>"
        "<th>&part;L_ft/&part;p_i</th><th>update</th></tr>" + "".join(cand_rows) + "</table>"
    )
    summary = (
        f"<b>L_rank = {state.rank_loss:.{digits}f}</b> from {state.n_violated} violated pair(s); "
        f"L_ft = {state.sft_loss:.{digits}f} on {_label(state.best)}; "
        f"L = L_rank + {state.sft_weight:g}&middot;L_ft = {state.loss:.{digits}f}"
    )
    return f'<div style="display:flex;gap:24px;align-items:flex-start">{pair_table}{cand_table}</div><p>{summary}</p>'


class RankLossFigure(BlitFigure):
    """The explorer's figure, built once and updated in place (a redraw must stay under 100 ms on CPU).

    Left: each candidate at (reward, score); a red segment joins every violated pair (the worse one
    scores higher), a grey dotted one every correctly ordered pair. Right: the update of each score
    after one gradient step, split into the rank part (red) and the SFT part (green).
    ``update(state)`` moves the artists; ``png()`` blits them and encodes the canvas as PNG.
    """

    def __init__(
        self,
        k: int,
        *,
        max_length: int = max(DEFAULT_LENGTHS),
        sft_weight: float = 1.0,
        learning_rate: float = 0.1,
        figsize=(8.0, 3.0),
        dpi: int = 80,
    ):
        super().__init__(figsize=figsize, dpi=dpi)
        self.k = k
        self.ax_scores, self.ax_update = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1.0]})
        ax = self.ax_scores
        self.pair_lines = {pair: ax.plot([], [], zorder=1)[0] for pair in itertools.combinations(range(k), 2)}
        self.points = ax.scatter([0.0] * k, [0.0] * k, s=60, color="tab:blue", zorder=2)
        self.labels = [ax.annotate(_label(i), (0.0, 0.0), textcoords="offset points", xytext=(6, 4)) for i in range(k)]
        ax.set_xlabel("reward r_i")
        ax.set_ylabel("score p_i (mean log-prob)")
        ax.set_xlim(REWARD_RANGE[0] - 0.5, REWARD_RANGE[1] + 1.2)
        ax.set_ylim(SCORE_RANGE[0] - 0.2, SCORE_RANGE[1] + 0.2)
        self.title = ax.text(0.5, 1.03, "", transform=ax.transAxes, ha="center", va="bottom", fontsize=10)

        xs = list(range(k))
        self.rank_bars = self.ax_update.bar(xs, [0.0] * k, color="tab:red", label="rank")
        self.sft_bars = self.ax_update.bar(xs, [0.0] * k, color="tab:green", label="SFT")
        self.ax_update.axhline(0.0, color="k", lw=0.8)
        self.ax_update.set_xticks(xs, [_label(i) for i in xs])
        bound = learning_rate * ((k - 1) + sft_weight * max_length) * 1.05
        self.ax_update.set_ylim(-bound, bound)
        self.ax_update.set_ylabel(f"update of p_i (lr = {learning_rate:g})")
        self.ax_update.set_title("one gradient step", fontsize=10)
        self.ax_update.legend(loc="lower left", fontsize=8)
        self.fig.tight_layout()
        self.freeze([*self.pair_lines.values(), self.points, *self.labels, self.title, *self.rank_bars, *self.sft_bars])

    def update(self, state: RankLossState) -> None:
        """Moves every artist to show ``state`` (no new artists, no layout pass)."""
        if len(state.scores) != self.k:
            raise ValueError(f"the figure was built for K = {self.k} candidates, got {len(state.scores)}")
        status = {(min(r.worse, r.better), max(r.worse, r.better)): r.status for r in state.pairs}
        for (a, b), line in self.pair_lines.items():
            line.set_data([state.rewards[a], state.rewards[b]], [state.scores[a], state.scores[b]])
            kind = status[(a, b)]
            line.set_visible(kind != "tie")
            if kind == "violated":
                line.set(color="tab:red", lw=2.0, ls="-")
            else:
                line.set(color="0.6", lw=0.8, ls=":")
        self.points.set_offsets(list(zip(state.rewards, state.scores)))
        for i, text in enumerate(self.labels):
            text.xy = (state.rewards[i], state.scores[i])
            text.set_text(_label(i) + (" (best)" if i == state.best else ""))
        self.title.set_text(f"L_rank = {state.rank_loss:.2f} ({state.n_violated} red pairs), L = {state.loss:.2f}")
        for i in range(self.k):
            rank_part = -state.learning_rate * state.grad_rank[i]
            sft_part = -state.learning_rate * state.grad_sft[i]
            self.rank_bars[i].set_height(rank_part)
            self.sft_bars[i].set_y(rank_part)
            self.sft_bars[i].set_height(sft_part)


def plot_rank_state(state: RankLossState):
    """Draws one state of the explorer (see :class:`RankLossFigure`) and returns the matplotlib Figure."""
    figure = RankLossFigure(
        len(state.scores), max_length=max(state.lengths), sft_weight=state.sft_weight, learning_rate=state.learning_rate
    )
    figure.update(state)
    return figure.static()


def build_rank_loss_widget(
    scores=DEFAULT_SCORES,
    rewards=DEFAULT_REWARDS,
    lengths=DEFAULT_LENGTHS,
    *,
    sft_weight: float = 1.0,
    learning_rate: float = 0.1,
):
    """Builds the rank-loss explorer: K score sliders, K reward sliders, the tables and the figure.

    Returns an ``ipywidgets.VBox`` with extra attributes: ``score_sliders``, ``reward_sliders``,
    ``table`` (HTML), ``image`` (PNG), ``state`` (the latest :class:`RankLossState`) and
    ``redraw_ms`` (how long the latest redraw took, callback + table + figure). Changing a slider
    redraws at once through :func:`rank_loss_state`.
    """
    import ipywidgets as widgets

    k = len(scores)
    layout = widgets.Layout(width="260px")
    score_sliders = [
        widgets.FloatSlider(
            value=float(s),
            min=SCORE_RANGE[0],
            max=SCORE_RANGE[1],
            step=0.05,
            description=f"p_{i + 1}",
            readout_format=".2f",
            continuous_update=True,
            layout=layout,
        )
        for i, s in enumerate(scores)
    ]
    reward_sliders = [
        widgets.IntSlider(
            value=int(r),
            min=REWARD_RANGE[0],
            max=REWARD_RANGE[1],
            description=f"r_{i + 1}",
            continuous_update=True,
            layout=layout,
        )
        for i, r in enumerate(rewards)
    ]
    table = widgets.HTML()
    image = widgets.Image(format="png")
    figure = RankLossFigure(k, max_length=max(lengths), sft_weight=sft_weight, learning_rate=learning_rate)

    box = widgets.VBox(
        [
            widgets.HBox(
                [
                    widgets.VBox([widgets.Label("scores p_i (mean log-prob)")] + score_sliders),
                    widgets.VBox([widgets.Label("rewards r_i (only the order matters)")] + reward_sliders),
                ]
            ),
            table,
            image,
        ]
    )

    def redraw(_change=None):
        start = time.perf_counter()
        state = rank_loss_state(
            [s.value for s in score_sliders],
            [r.value for r in reward_sliders],
            lengths,
            sft_weight=sft_weight,
            learning_rate=learning_rate,
        )
        table.value = pairs_table_html(state)
        figure.update(state)
        image.value = figure.png()
        box.state = state
        box.redraw_ms = 1000.0 * (time.perf_counter() - start)

    for slider in score_sliders + reward_sliders:
        slider.observe(redraw, names="value")
    box.score_sliders, box.reward_sliders, box.table, box.image, box.lengths = (
        score_sliders,
        reward_sliders,
        table,
        image,
        tuple(lengths),
    )
    if len(rewards) != k or len(lengths) != k:
        raise ValueError(
            f"scores, rewards and lengths must have the same length, got {k}, {len(rewards)}, {len(lengths)}"
        )
    redraw()
    return box
