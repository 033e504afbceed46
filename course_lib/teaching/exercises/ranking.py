"""The RRHF exercise: the prepared rankings and the catalogue of known mistakes (formulas of :class:`_Rankings`,
in float64; the engine reports the first that reproduces every result).
"""

import torch
import torch.nn.functional as F

from ...maths.losses import reward_order_mask, rrhf_loss, rrhf_loss_terms, rrhf_scores
from .engine import Case, Exercise, Mistake, format_numbers

RANKING_NAMES = ("candidate_logps", "candidate_lengths", "candidate_rewards")


def _rankings(logps, lengths, rewards, *, length_penalty=1.0, sft_weight=1.0, dtype=torch.float32):
    """A case builder: (B, K) summed log-probs of ``dtype``, int64 lengths, float32 rewards, the two weights."""
    return lambda: {
        "candidate_logps": torch.tensor(logps, dtype=dtype),
        "candidate_lengths": torch.tensor(lengths, dtype=torch.int64),
        "candidate_rewards": torch.tensor(rewards, dtype=torch.float32),
        "length_penalty": length_penalty,
        "sft_weight": sft_weight,
    }


# Scores p = logp / length: row 0 [-3, -2, -4.5, -1.5], row 1 [-1, -2.5, -1.5, -3.5]. The best candidate
# is neither first nor last, nor is the worst; some pairs are ranked wrongly (rank loss 0.5 and 1.5).
_RANKS = (
    [[-12.0, -20.0, -9.0, -12.0], [-6.0, -5.0, -18.0, -14.0]],  # candidate_logps
    [[4, 10, 2, 8], [6, 2, 12, 4]],  # candidate_lengths
    [[0.5, 2.0, -1.0, 1.0], [1.5, -0.5, 3.0, 0.0]],  # candidate_rewards
)
# Candidates 0 and 1 tie on reward, with different scores (p = [-2, -1, -1.5, -3]).
_TIES = ([[-10.0, -3.0, -6.0, -6.0]], [[5, 3, 4, 2]], [[1.0, 1.0, 0.0, 2.0]])

RANKING_CASES = (
    Case("2 prompts x 4 candidates", _rankings(*_RANKS), check_grad=True),
    Case("1 prompt whose candidates 0 and 1 tie on reward", _rankings(*_TIES), check_grad=True),
    Case("a batch of 1 prompt with 2 candidates", _rankings([[-4.0, -9.0]], [[2, 3]], [[0.0, 1.0]])),
    Case("2 prompts x 4 candidates, sft_weight = 0.5", _rankings(*_RANKS, sft_weight=0.5)),
    Case("2 prompts x 4 candidates, length_penalty = 0.5", _rankings(*_RANKS, length_penalty=0.5)),
    Case("bfloat16 log-probs, 2 prompts x 4 candidates", _rankings(*_RANKS, dtype=torch.bfloat16)),
)


class _Rankings:
    """What the RRHF mistake formulas read: the inputs in float64 and the library's two terms."""

    def __init__(self, inputs: dict):
        self.logps = inputs["candidate_logps"].detach().to(torch.float64)  # (B, K)
        self.lengths = inputs["candidate_lengths"]  # (B, K)
        self.rewards = inputs["candidate_rewards"].detach().to(torch.float64)  # (B, K)
        self.length_penalty, self.sft_weight = inputs["length_penalty"], inputs["sft_weight"]
        self.args = (self.logps, self.lengths, self.rewards)
        self.kwargs = {"length_penalty": self.length_penalty, "sft_weight": self.sft_weight}
        self.rank, self.sft = rrhf_loss_terms(*self.args, length_penalty=self.length_penalty)  # (B,), (B,)
        self.scores = rrhf_scores(self.logps, self.lengths, length_penalty=self.length_penalty)  # (B, K)
        worse = reward_order_mask(self.rewards)  # (B, K, K): r_i < r_j
        self.n_pairs = worse.sum(dim=(1, 2)).to(torch.float64)  # (B,) pairs that count
        self.k = self.logps.shape[1]
        self.best, self.worst = self.rewards.argmax(dim=1), self.rewards.argmin(dim=1)  # (B,) indices
        self.first, self.last = torch.zeros_like(self.best), torch.full_like(self.best, self.k - 1)  # (B,)

    def rank_with(self, *, scores=None, ties=False, reverse=False, hinge=torch.relu) -> torch.Tensor:
        """sum over pairs with r_i < r_j (r_i <= r_j, i != j if ``ties``) of hinge(p_i - p_j). (B,)."""
        scores = self.scores if scores is None else scores
        r = self.rewards
        counts = (r.unsqueeze(2) <= r.unsqueeze(1)) if ties else reward_order_mask(r)  # (B, K, K)
        counts = counts & ~torch.eye(self.k, dtype=torch.bool)
        gap = scores.unsqueeze(2) - scores.unsqueeze(1)  # (B, K, K): p_i - p_j
        return (hinge(-gap if reverse else gap) * counts).sum(dim=(1, 2))

    def sft_on(self, index: torch.Tensor) -> torch.Tensor:
        """-logp of the candidate ``index`` (B,) of each prompt. (B,)."""
        return -self.logps.gather(1, index.view(-1, 1)).squeeze(1)

    def length_of(self, index: torch.Tensor) -> torch.Tensor:
        """The length of the candidate ``index`` (B,) of each prompt. (B,)."""
        return self.lengths.gather(1, index.view(-1, 1)).squeeze(1).to(torch.float64)

    def seed(self) -> torch.Tensor:
        """The seed's rrhf_loss: sorted by reward (stable, descending), each pair (i before j) adds
        -log_softmax([s_i, s_j])[0] = softplus(s_j - s_i) on the raw scores s = logp; divided by K**2."""
        r, idx = self.rewards, torch.arange(self.k)
        first = (r.unsqueeze(2) > r.unsqueeze(1)) | (
            (r.unsqueeze(2) == r.unsqueeze(1)) & (idx.view(-1, 1) < idx.view(1, -1))
        )
        terms = F.softplus(self.logps.unsqueeze(1) - self.logps.unsqueeze(2))  # (B, K, K): softplus(s_j - s_i)
        return (terms * first).sum(dim=(1, 2)) / self.k**2


_SFT = "sft_weight * (-candidate_logps of the highest-reward candidate)"

# fmt: off
RRHF_MISTAKES = (
    Mistake("the seed's rrhf_loss", lambda r: r.seed(),
            "This is the seed's rrhf_loss: a softmax cross-entropy over pairs of raw log-probs, divided by K**2, "
            "with no SFT term. RRHF (Yuan et al. 2023, Eqs. 1-5) scores each candidate by its length-normalised "
            "log-prob p_i = logp_i / length_i**length_penalty, sums the hinge max(0, p_i - p_j) over pairs with "
            f"r_i < r_j, and adds {_SFT}."),
    Mistake("no SFT term", lambda r: r.rank,
            f"The SFT term is missing: RRHF's loss is the ranking loss plus {_SFT} (Eq. 5)."),
    Mistake("no length normalisation", lambda r: r.rank_with(scores=r.logps) + r.sft_weight * r.sft,
            "Your scores are not length-normalised: RRHF ranks "
            "p_i = candidate_logps / candidate_lengths**length_penalty (Eq. 1), otherwise a long response always "
            "looks worse."),
    Mistake("ignores length_penalty", lambda r: rrhf_loss(*r.args, length_penalty=1.0, sft_weight=r.sft_weight),
            "Your function ignores length_penalty: divide by candidate_lengths ** length_penalty, not by the length."),
    Mistake("SFT on the worst", lambda r: r.rank + r.sft_weight * r.sft_on(r.worst),
            "Your SFT term uses the *lowest*-reward candidate: it should use the highest, "
            "candidate_rewards.argmax(dim=1) (Eqs. 3-4)."),
    Mistake("SFT on the first", lambda r: r.rank + r.sft_weight * r.sft_on(r.first),
            "Your SFT term uses the first candidate; the candidates are not sorted. Use the highest-reward one, "
            "candidate_rewards.argmax(dim=1) (Eqs. 3-4)."),
    Mistake("SFT on the last", lambda r: r.rank + r.sft_weight * r.sft_on(r.last),
            "Your SFT term uses the last candidate; the candidates are not sorted. Use the highest-reward one, "
            "candidate_rewards.argmax(dim=1) (Eqs. 3-4)."),
    Mistake("SFT averaged over tokens", lambda r: r.rank + r.sft_weight * r.sft / r.length_of(r.best),
            "Your SFT term is the per-token average (-logp / length, as in the official code's token mean); the "
            "library follows the paper (Eqs. 3-4) and uses the summed log-prob: "
            "-candidate_logps of the best candidate."),
    Mistake("SFT sign", lambda r: r.rank - r.sft_weight * r.sft,
            "Your SFT term has the wrong sign: it is the negative log-likelihood, -candidate_logps of the best "
            "candidate, so minimising it raises that candidate's probability."),
    Mistake("ignores sft_weight", lambda r: r.rank + r.sft,
            "Your function ignores sft_weight: the loss is rank + sft_weight * sft."),
    Mistake("sft_weight on the rank", lambda r: r.sft_weight * r.rank + r.sft,
            "sft_weight multiplies the ranking term; it should multiply the SFT term: rank + sft_weight * sft."),
    Mistake("ties penalised", lambda r: r.rank_with(ties=True) + r.sft_weight * r.sft,
            "Your ranking loss penalises candidates that tie on reward: only pairs with r_i < r_j (strictly) count; "
            "use < rather than <=, and skip i == j."),
    Mistake("pairs counted twice", lambda r: 2 * r.rank + r.sft_weight * r.sft,
            "Your ranking loss counts each pair twice: sum max(0, p_i - p_j) once per pair with r_i < r_j "
            "(looping over all (i, j) and then again over (j, i) doubles it)."),
    Mistake("hinge reversed", lambda r: r.rank_with(reverse=True) + r.sft_weight * r.sft,
            "Your hinge points the wrong way: for r_i < r_j the penalty is max(0, p_i - p_j), paid when the worse "
            "candidate scores higher."),
    Mistake("softplus instead of hinge", lambda r: r.rank_with(hinge=F.softplus) + r.sft_weight * r.sft,
            "You use a logistic (softplus) penalty; RRHF's ranking loss is the hinge max(0, p_i - p_j) (Eq. 2)."),
    Mistake("mean over the pairs that count", lambda r: r.rank / r.n_pairs + r.sft_weight * r.sft,
            "Your ranking loss is a mean over pairs; Eq. 2 sums max(0, p_i - p_j) over the pairs with r_i < r_j."),
    Mistake("mean over all pairs", lambda r: r.rank / (r.k * (r.k - 1) / 2) + r.sft_weight * r.sft,
            "Your ranking loss is a mean over the K*(K-1)/2 pairs; "
            "Eq. 2 sums max(0, p_i - p_j) over the pairs with r_i < r_j."),
    Mistake("mean over K**2", lambda r: r.rank / r.k**2 + r.sft_weight * r.sft,
            "Your ranking loss is divided by K**2 (a mean over the K x K matrix, as the seed does); Eq. 2 sums "
            "max(0, p_i - p_j) over the pairs with r_i < r_j."),
)
# fmt: on


RRHF_EXERCISE = Exercise(
    reference=rrhf_loss,
    tensor_names=RANKING_NAMES,
    cases=RANKING_CASES,
    mistakes=RRHF_MISTAKES,
    view=_Rankings,
    grad_names=RANKING_NAMES[:1],
    unit="prompt",
    summary="ties, a batch of 1, sft_weight, length_penalty, bfloat16",
    hint="Check, in order: scores p_i = candidate_logps / candidate_lengths**length_penalty; the sum of "
    f"max(0, p_i - p_j) over pairs with r_i < r_j (ties never count); plus {_SFT}; one value per prompt.",
    explain=lambda r: (
        f"course_lib.maths.losses.rrhf_loss_terms gives rank = {format_numbers(r.rank)} "
        f"and sft = {format_numbers(r.sft)}"
    ),
)
