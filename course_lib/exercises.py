"""Exercise checkers for Chapter 18: ``check_dpo_loss``, ``check_ipo_loss`` and ``check_rrhf_loss``.

A learner writes ``my_dpo_loss`` (``my_ipo_loss``, and as a bonus ``my_rrhf_loss``) with the library
function's signature and calls ``check_dpo_loss(my_dpo_loss)``. The checker prints one verdict, a tick
or a diagnosis saying what to change, and returns True or False. It never raises for a mistake in the
learner's function, and its text is deterministic (notebooks that call it are checked by nbval).

How it decides:

1. It runs the function on every prepared case (``PAIRWISE_CASES`` or ``RANKING_CASES``: several
   betas, a batch of size 1, extreme margins, bfloat16 inputs), with warnings silenced. An exception,
   an input changed in place, or a result that is not a floating-point tensor stops it there.
2. It compares each result with the library's own function (``course_lib.losses``) on the same
   inputs, with a tolerance that suits the inputs' dtype.
3. If a result differs, it looks for a known mistake *by behaviour*: it evaluates each formula of
   ``DPO_MISTAKES`` / ``IPO_MISTAKES`` / ``RRHF_MISTAKES``, in order, on the same inputs (in float64)
   and reports the first one that reproduces the learner's numbers on every case; also when the
   learner returns the batch mean or sum instead of one loss per pair (or per prompt), and when the
   learner's function overflows to inf/NaN on the extreme cases only. Otherwise it reports a wrong
   shape, inf/NaN, or shows the numbers of the first case that differs with a checklist.
4. If every value is right, it checks that ``.backward()`` reaches the policy's log-probs and gives
   the library's gradients.

The cases never use ``beta = 1``, where several of the mistakes coincide with the right formula.
Two wrong formulas that agree on every input cannot be told apart; each message then names both
(for example, swapping chosen and rejected is the same as flipping the sign of ``h``).
"""

import inspect
import re
import textwrap
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .losses import dpo_loss, ipo_loss, rrhf_loss, rrhf_loss_terms, rrhf_scores

__all__ = [
    "PAIRWISE_CASES",
    "RANKING_CASES",
    "DPO_MISTAKES",
    "IPO_MISTAKES",
    "RRHF_MISTAKES",
    "Case",
    "Mistake",
    "check_dpo_loss",
    "check_ipo_loss",
    "check_rrhf_loss",
]


@dataclass(frozen=True)
class Case:
    """A prepared input. ``build()`` returns fresh inputs: the tensors by name, then the hyperparameters."""

    name: str
    build: Callable[[], dict]
    extreme: bool = False  # margins so large that -log(sigmoid(z)) overflows; inf/NaN there means "overflow"
    check_grad: bool = False  # also compare gradients with the library's on this case


@dataclass(frozen=True)
class Mistake:
    """A known mistake: ``formula(view)`` reproduces it on a case's inputs; ``message`` says what to change."""

    name: str
    formula: Callable
    message: str


# --------------------------------------------------------------------------------------------------
# Pairwise losses (DPO, IPO): the cases
# --------------------------------------------------------------------------------------------------

PAIR_NAMES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _pairs(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected, dtype=torch.float32):
    """A case builder: four (B,) log-prob tensors of ``dtype`` and ``beta``."""

    def build() -> dict:
        values = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
        inputs = {name: torch.tensor(v, dtype=dtype) for name, v in zip(PAIR_NAMES, values)}
        return {**inputs, "beta": beta}

    return build


# Multiples of 1/4, exact in bfloat16 too. h = [2.5, -0.5, 9.0, 0.0]; IPO's target 1/(2 beta) falls
# between them for beta = 0.1 and 0.5; the reference margins rc - rr are not all zero.
_BATCH = (
    [-12.5, -20.0, -3.0, -30.0],  # policy_chosen_logps
    [-15.0, -17.5, -13.25, -26.75],  # policy_rejected_logps
    [-14.0, -19.0, -10.5, -29.5],  # ref_chosen_logps
    [-14.0, -17.0, -11.75, -26.25],  # ref_rejected_logps
)
# h = [1e4, -1e4, 2005, 0.5]: with beta = 0.5, |beta * h| reaches 5000.
_EXTREME = (
    [-150.0, -10150.0, -40.0, -7.5],
    [-80.0, -60.0, -3000.0, -6.0],
    [-10150.0, -150.0, -45.0, -7.0],
    [-80.0, -60.0, -1000.0, -5.0],
)
# h = [-300, 300, 0.5], exact in bfloat16: with beta = 0.5, -log(sigmoid(-150)) is inf in bfloat16.
_EXTREME_BF16 = ([-310.0, -10.0, -6.5], [-20.0, -20.0, -9.0], [-10.0, -310.0, -6.0], [-20.0, -20.0, -8.0])

PAIRWISE_CASES = (
    Case("a batch of 4 pairs, beta = 0.1", _pairs(0.1, *_BATCH), check_grad=True),
    Case("the same 4 pairs, beta = 0.5", _pairs(0.5, *_BATCH)),
    Case("the same 4 pairs, beta = 3", _pairs(3.0, *_BATCH)),
    Case("a batch of size 1, beta = 0.2", _pairs(0.2, [-8.0], [-12.5], [-9.0], [-10.0])),
    Case("extreme margins (|beta * h| up to 5000, float32), beta = 0.5", _pairs(0.5, *_EXTREME),
         extreme=True, check_grad=True),
    Case("bfloat16 inputs, beta = 0.25", _pairs(0.25, *_BATCH, dtype=torch.bfloat16)),
    Case("bfloat16 inputs with large margins (|beta * h| = 150), beta = 0.5",
         _pairs(0.5, *_EXTREME_BF16, dtype=torch.bfloat16), extreme=True),
)


def _log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(z)) = -softplus(-z), stable; F.logsigmoid is the same but slow on tiny CPU tensors."""
    return -F.softplus(-z)


class _Pairs:
    """What the pairwise mistake formulas read: the four log-probs in float64, beta, h and IPO's target."""

    def __init__(self, inputs: dict):
        self.args = tuple(inputs[name].detach().to(torch.float64) for name in PAIR_NAMES)
        self.pc, self.pr, self.rc, self.rr = self.args
        self.beta = inputs["beta"]
        self.kwargs = {"beta": self.beta}
        self.h = (self.pc - self.rc) - (self.pr - self.rr)  # (B,) the log-ratio margin
        self.target = 1.0 / (2.0 * self.beta)  # IPO's target for h


# --------------------------------------------------------------------------------------------------
# Pairwise losses: the known mistakes, checked in this order
# --------------------------------------------------------------------------------------------------

_H = "h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)"
_OVERFLOW_NOTE = (
    "Your function returns inf or NaN on the extreme-margin cases, where the exact loss is finite: "
    "-torch.log(torch.sigmoid(z)) (the seed's dpo_loss and ipo_loss) and torch.log(1 + torch.exp(-z)) "
    "overflow once sigmoid(z) underflows to 0 (z below about -100 in float32, sooner in bfloat16). "
    "Use -F.logsigmoid(z), or F.softplus(-z), which stay finite."
)

DPO_MISTAKES = (
    Mistake("chosen and rejected swapped", lambda p: -_log_sigmoid(-p.beta * p.h),
            "Your loss is small when the *rejected* response gains probability: chosen and rejected are swapped "
            f"somewhere (or the sign of h is flipped). Use {_H} and the loss -F.logsigmoid(beta * h)."),
    Mistake("no reference model", lambda p: -_log_sigmoid(p.beta * (p.pc - p.pr)),
            "Your loss ignores the reference model: it uses policy_chosen_logps - policy_rejected_logps. "
            f"DPO compares log-ratios against the reference: {_H}."),
    Mistake("reference added", lambda p: -_log_sigmoid(p.beta * ((p.pc - p.pr) + (p.rc - p.rr))),
            "The reference log-probs enter with the wrong sign: a log-ratio is policy minus reference. "
            f"Use {_H}."),
    Mistake("beta missing", lambda p: -_log_sigmoid(p.h),
            "beta is missing: you compute -logsigmoid(h). DPO's loss is -F.logsigmoid(beta * h)."),
    Mistake("beta multiplies the loss", lambda p: -p.beta * F.logsigmoid(p.h),
            "beta multiplies the loss instead of the margin: you compute -beta * logsigmoid(h). "
            "Write -F.logsigmoid(beta * h)."),
    Mistake("margin divided by beta", lambda p: -_log_sigmoid(p.h / p.beta),
            "You divide the margin by beta (logsigmoid(h / beta)): DPO multiplies it, -F.logsigmoid(beta * h)."),
    Mistake("beta on the policy only", lambda p: -_log_sigmoid(p.beta * (p.pc - p.pr) - (p.rc - p.rr)),
            "beta multiplies only the policy's log-probs: put it in front of the whole margin, "
            f"-F.logsigmoid(beta * h) with {_H}."),
    Mistake("sign of the loss", lambda p: _log_sigmoid(p.beta * p.h),
            "Your losses are negative: you return logsigmoid(beta * h), the log-likelihood that DPO maximises. "
            "The loss to minimise is its negative, -F.logsigmoid(beta * h)."),
    Mistake("no log", lambda p: -torch.sigmoid(p.beta * p.h),
            "The log is missing: you return -sigmoid(beta * h). Write -F.logsigmoid(beta * h)."),
    Mistake("no log, 1 - sigmoid", lambda p: torch.sigmoid(-p.beta * p.h),
            "The log is missing: you return 1 - sigmoid(beta * h) = sigmoid(-beta * h). Write -F.logsigmoid(beta * h)."),
    Mistake("linear loss", lambda p: -p.beta * p.h,
            "You return -beta * h, the implicit reward margin with a minus sign: DPO wraps it in a log-sigmoid, "
            "-F.logsigmoid(beta * h)."),
    Mistake("margin only", lambda p: -p.h,
            "You return -h: DPO's loss is -F.logsigmoid(beta * h)."),
    Mistake("IPO instead of DPO", lambda p: (p.h - p.target) ** 2,
            "This is the IPO loss (h - 1/(2*beta))**2; this checker expects DPO, -F.logsigmoid(beta * h). "
            "Check it with check_ipo_loss instead."),
    Mistake("hinge instead of DPO", lambda p: torch.relu(1 - p.beta * p.h),
            "This is the hinge loss max(0, 1 - beta * h) (SLiC/RSO); DPO is -F.logsigmoid(beta * h)."),
)

IPO_MISTAKES = (
    Mistake("the seed's ipo_loss", lambda p: -_log_sigmoid((p.pc - p.pr) - p.beta),
            "This is the seed's ipo_loss: -log(sigmoid(policy_chosen_logps - policy_rejected_logps - beta)) is a "
            "logistic loss with an offset (margin DPO) and it ignores the reference model. IPO (Azar et al. 2023, "
            f"Eq. 17) is the squared loss (h - 1/(2*beta))**2 with {_H}."),
    Mistake("DPO instead of IPO", lambda p: -_log_sigmoid(p.beta * p.h),
            "This is the DPO loss -logsigmoid(beta * h). IPO replaces it with a square that has a finite target, "
            "(h - 1/(2*beta))**2: the margin stops at 1/(2*beta) instead of growing without bound."),
    Mistake("logistic with an offset", lambda p: -_log_sigmoid(p.h - p.beta),
            "-logsigmoid(h - beta) is a logistic loss with an offset (margin DPO), not IPO: IPO's loss is the "
            "square (h - 1/(2*beta))**2."),
    Mistake("hinge instead of IPO", lambda p: torch.relu(1 - p.beta * p.h),
            "This is the hinge loss max(0, 1 - beta * h) (SLiC/RSO); IPO is the square (h - 1/(2*beta))**2."),
    Mistake("no reference model", lambda p: ((p.pc - p.pr) - p.target) ** 2,
            "Your loss ignores the reference model: it squares policy_chosen_logps - policy_rejected_logps - "
            f"1/(2*beta). IPO's margin is the difference of log-ratios, {_H}."),
    Mistake("reference added", lambda p: ((p.pc - p.pr) + (p.rc - p.rr) - p.target) ** 2,
            f"The reference log-probs enter with the wrong sign: a log-ratio is policy minus reference. Use {_H}."),
    Mistake("swapped, or + target", lambda p: (p.h + p.target) ** 2,
            "You compute (h + 1/(2*beta))**2, which is the same as swapping chosen and rejected: the loss would "
            f"push the margin to -1/(2*beta). Use (h - 1/(2*beta))**2 with {_H}."),
    Mistake("target 1/beta", lambda p: (p.h - 1.0 / p.beta) ** 2,
            "Your target is 1/beta; IPO's is 1/(2*beta) (Eq. 17). Write (h - 1/(2*beta))**2."),
    Mistake("target beta/2 (precedence)", lambda p: (p.h - p.beta / 2) ** 2,
            "Your target is beta/2: in Python 1/2*beta means (1/2)*beta. Write (h - 1/(2*beta))**2."),
    Mistake("target 1/2", lambda p: (p.h - 0.5) ** 2,
            "Your target is 1/2 whatever beta is: IPO's target is 1/(2*beta). Write (h - 1/(2*beta))**2."),
    Mistake("target beta", lambda p: (p.h - p.beta) ** 2,
            "Your target is beta; IPO's is 1/(2*beta). Write (h - 1/(2*beta))**2."),
    Mistake("target missing", lambda p: p.h ** 2,
            "The target is missing: h**2 pulls the margin to 0, so nothing is learned. IPO's loss is (h - 1/(2*beta))**2."),
    Mistake("beta * h, target 1/2", lambda p: (p.beta * p.h - 0.5) ** 2,
            "Your loss is beta**2 times IPO's: (beta*h - 1/2)**2 = beta**2 * (h - 1/(2*beta))**2. It has the same "
            "minimum, but its gradients are beta**2 times smaller (100 times at beta = 0.1), so the learning rate "
            "means something else. IPO puts no beta in front of h: write (h - 1/(2*beta))**2."),
    Mistake("beta * h, target 1", lambda p: (p.beta * p.h - 1) ** 2,
            "You compute (beta*h - 1)**2 = beta**2 * (h - 1/beta)**2: the scale and the target are both off. "
            "IPO puts no beta in front of h: write (h - 1/(2*beta))**2."),
    Mistake("beta * h, right target", lambda p: (p.beta * p.h - p.target) ** 2,
            "You multiply h by beta as in DPO's implicit reward; IPO's loss uses h itself: (h - 1/(2*beta))**2."),
    Mistake("no square", lambda p: p.h - p.target,
            "You return h - 1/(2*beta) without the square: it can be negative and has no minimum. "
            "IPO squares it: (h - 1/(2*beta))**2."),
    Mistake("no square, reversed", lambda p: p.target - p.h,
            "You return 1/(2*beta) - h without the square: it can be negative and has no minimum. "
            "IPO squares it: (h - 1/(2*beta))**2."),
    Mistake("absolute value", lambda p: (p.h - p.target).abs(),
            "You take the absolute value |h - 1/(2*beta)| instead of the square: its gradient does not shrink "
            "near the target. IPO (Eq. 17) squares it: (h - 1/(2*beta))**2."),
    Mistake("both orderings", lambda p: 0.5 * ((p.h - 1.0 / p.beta) ** 2 + p.h ** 2),
            "You compute 0.5*[(h - 1/beta)**2 + h**2], the form with both orderings of each pair. It equals "
            "(h - 1/(2*beta))**2 + 1/(4*beta**2): the same gradients, but not the library's numbers. "
            "Write Eq. 17 as it is: (h - 1/(2*beta))**2."),
    Mistake("half the loss", lambda p: 0.5 * (p.h - p.target) ** 2,
            "Your loss has an extra factor 1/2: Eq. 17 is (h - 1/(2*beta))**2 with no 1/2 in front."),
    Mistake("margin only", lambda p: -p.h,
            "You return -h: IPO's loss is the square (h - 1/(2*beta))**2."),
)


# --------------------------------------------------------------------------------------------------
# RRHF: the cases
# --------------------------------------------------------------------------------------------------

RANKING_NAMES = ("candidate_logps", "candidate_lengths", "candidate_rewards")


def _rankings(logps, lengths, rewards, *, length_penalty=1.0, sft_weight=1.0, dtype=torch.float32):
    """A case builder: (B, K) summed log-probs of ``dtype``, int64 lengths, float32 rewards, the two weights."""

    def build() -> dict:
        return {
            "candidate_logps": torch.tensor(logps, dtype=dtype),
            "candidate_lengths": torch.tensor(lengths, dtype=torch.int64),
            "candidate_rewards": torch.tensor(rewards, dtype=torch.float32),
            "length_penalty": length_penalty,
            "sft_weight": sft_weight,
        }

    return build


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
        worse = self.rewards.unsqueeze(2) < self.rewards.unsqueeze(1)  # (B, K, K): r_i < r_j
        self.n_pairs = worse.sum(dim=(1, 2)).to(torch.float64)  # (B,) pairs that count
        self.k = self.logps.shape[1]
        self.best, self.worst = self.rewards.argmax(dim=1), self.rewards.argmin(dim=1)  # (B,) indices
        self.first, self.last = torch.zeros_like(self.best), torch.full_like(self.best, self.k - 1)  # (B,)

    def rank_with(self, *, scores=None, ties=False, reverse=False, hinge=torch.relu) -> torch.Tensor:
        """sum over pairs with r_i < r_j (r_i <= r_j, i != j if ``ties``) of hinge(p_i - p_j). (B,)."""
        scores = self.scores if scores is None else scores
        r = self.rewards
        counts = (r.unsqueeze(2) <= r.unsqueeze(1)) if ties else (r.unsqueeze(2) < r.unsqueeze(1))  # (B, K, K)
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
        first = (r.unsqueeze(2) > r.unsqueeze(1)) | ((r.unsqueeze(2) == r.unsqueeze(1)) & (idx.view(-1, 1) < idx.view(1, -1)))
        terms = F.softplus(self.logps.unsqueeze(1) - self.logps.unsqueeze(2))  # (B, K, K): softplus(s_j - s_i)
        return (terms * first).sum(dim=(1, 2)) / self.k**2


_SFT = "sft_weight * (-candidate_logps of the highest-reward candidate)"

RRHF_MISTAKES = (
    Mistake("the seed's rrhf_loss", lambda r: r.seed(),
            "This is the seed's rrhf_loss: a softmax cross-entropy over pairs of raw log-probs, divided by K**2, "
            "with no SFT term. RRHF (Yuan et al. 2023, Eqs. 1-5) scores each candidate by its length-normalised "
            "log-prob p_i = logp_i / length_i**length_penalty, sums the hinge max(0, p_i - p_j) over pairs with "
            f"r_i < r_j, and adds {_SFT}."),
    Mistake("no SFT term", lambda r: r.rank,
            f"The SFT term is missing: RRHF's loss is the ranking loss plus {_SFT} (Eq. 5)."),
    Mistake("no length normalisation", lambda r: r.rank_with(scores=r.logps) + r.sft_weight * r.sft,
            "Your scores are not length-normalised: RRHF ranks p_i = candidate_logps / candidate_lengths**length_penalty "
            "(Eq. 1), otherwise a long response always looks worse."),
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
            "library follows the paper (Eqs. 3-4) and uses the summed log-prob: -candidate_logps of the best candidate."),
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
            "Your ranking loss is a mean over the K*(K-1)/2 pairs; Eq. 2 sums max(0, p_i - p_j) over the pairs with r_i < r_j."),
    Mistake("mean over K**2", lambda r: r.rank / r.k**2 + r.sft_weight * r.sft,
            "Your ranking loss is divided by K**2 (a mean over the K x K matrix, as the seed does); Eq. 2 sums "
            "max(0, p_i - p_j) over the pairs with r_i < r_j."),
)


# --------------------------------------------------------------------------------------------------
# The three exercises
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Exercise:
    """Everything one checker needs."""

    reference: Callable  # the library's function: the answer
    tensor_names: tuple  # its positional arguments, in order; the other inputs are keywords
    cases: tuple
    mistakes: tuple
    view: type  # wraps a case's inputs (in float64) for the mistake formulas
    grad_names: tuple  # inputs whose gradients must match the library's
    unit: str  # what one loss is for: "pair" or "prompt"
    summary: str  # what the cases cover, for the tick
    hint: str  # the checklist printed when no known mistake matches
    explain: Callable  # view -> a short line shown next to the numbers
    seed: str = ""  # said when the formula is right but, as in the seed, it averages the batch and overflows

    @property
    def reference_name(self) -> str:
        return f"course_lib.losses.{self.reference.__name__}"


_PAIRWISE = dict(tensor_names=PAIR_NAMES, cases=PAIRWISE_CASES, view=_Pairs, grad_names=PAIR_NAMES[:2], unit="pair",
                 summary="3 betas, a batch of 1, extreme margins, bfloat16")
_DPO = _Exercise(
    reference=dpo_loss,
    mistakes=DPO_MISTAKES,
    hint=f"Check, in order: the margin {_H}; beta multiplies h; the loss is -F.logsigmoid(beta * h), one value per pair.",
    explain=lambda p: f"h = {_fmt(p.h)}",
    seed=("This is the seed's dpo_loss: its formula is right, but it returns the batch mean and it overflows "
          "at extreme margins."),
    **_PAIRWISE,
)
_IPO = _Exercise(
    reference=ipo_loss,
    mistakes=IPO_MISTAKES,
    hint=f"Check, in order: the margin {_H}; the target 1/(2*beta); the loss (h - 1/(2*beta))**2, one value per pair.",
    explain=lambda p: f"h = {_fmt(p.h)}, target 1/(2*beta) = {_fmt(torch.tensor(p.target))}",
    **_PAIRWISE,
)
_RRHF = _Exercise(
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
    explain=lambda r: f"course_lib.losses.rrhf_loss_terms gives rank = {_fmt(r.rank)} and sft = {_fmt(r.sft)}",
)


def check_dpo_loss(fn) -> bool:
    """Check a learner's ``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta)``
    against :func:`course_lib.losses.dpo_loss`. Prints a verdict; returns True when it matches."""
    return _check(fn, _DPO)


def check_ipo_loss(fn) -> bool:
    """Check a learner's ``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta)``
    against :func:`course_lib.losses.ipo_loss`. Prints a verdict; returns True when it matches."""
    return _check(fn, _IPO)


def check_rrhf_loss(fn) -> bool:
    """Check a learner's ``fn(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty, sft_weight)``
    against :func:`course_lib.losses.rrhf_loss`. Prints a verdict; returns True when it matches."""
    return _check(fn, _RRHF)


# --------------------------------------------------------------------------------------------------
# The checking itself
# --------------------------------------------------------------------------------------------------


class _NotImplemented(Exception):
    """Raised inside the checker when the learner's function raises NotImplementedError on the first case."""


def _check(fn, ex: _Exercise) -> bool:
    """Print the verdict on ``fn`` for exercise ``ex``; True when it matches the library."""
    name = _name_of(fn)
    if not callable(fn):
        _say(f"❌ Pass the function itself, not what it returns: {_checker_call(ex)} (no parentheses after the "
             f"function's name). Got a {type(fn).__name__}.")
        return False
    try:
        problem = _values_problem(fn, ex) or _gradient_problem(fn, ex)
    except _NotImplemented:
        _say(f"⏳ {name} is not implemented yet — replace `raise NotImplementedError()` with your code.")
        return False
    if problem:
        _say(f"❌ {name} does not match {ex.reference_name} yet.", problem)
        return False
    _say(f"✅ {name} matches {ex.reference_name} on all {len(ex.cases)} cases ({ex.summary}), gradients included.")
    return True


def _values_problem(fn, ex: _Exercise) -> str | None:
    """Run ``fn`` on every case; return a diagnosis, or None when every value matches the library's."""
    outputs = []
    for i, case in enumerate(ex.cases):
        inputs = case.build()
        out, problem = _call(fn, ex, inputs, case, first=(i == 0))
        if problem:
            return problem
        outputs.append(out.detach())
    expected = [_call_reference(ex, case.build()) for case in ex.cases]
    tolerances = [_tolerance(case.build()) for case in ex.cases]
    if all(_close(out, want, tol) for out, want, tol in zip(outputs, expected, tolerances)):
        return None
    views = [ex.view(case.build()) for case in ex.cases]
    return (
        _known_mistake(outputs, views, tolerances, ex)
        or _shape_problem(outputs, expected, ex)
        or _non_finite_problem(outputs, expected, ex)
        or _show_numbers(outputs, expected, tolerances, views, ex)
    )


def _call(fn, ex: _Exercise, inputs: dict, case: Case, *, first: bool):
    """Call ``fn`` on a case's inputs. Returns (output, None) or (None, a diagnosis)."""
    tensors = [inputs[name] for name in ex.tensor_names]
    hyper = {k: v for k, v in inputs.items() if k not in ex.tensor_names}
    saved = [(t.clone(), t._version) for t in tensors]
    problem = _signature_problem(fn, tensors, hyper, ex)
    if problem:
        return None, problem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*tensors, **hyper)
    except NotImplementedError as exc:
        if first:
            raise _NotImplemented() from exc
        return None, _exception_problem(exc, case, ex)
    except Exception as exc:  # any mistake in the learner's code becomes a diagnosis
        return None, _exception_problem(exc, case, ex)
    for name, t, (before, version) in zip(ex.tensor_names, tensors, saved):
        if t._version != version or t.shape != before.shape or not torch.equal(t, before):
            return None, (
                f"Your function changed its input {name} in place (on the case: {case.name}). A loss must not modify "
                f"its arguments: the caller reuses them, and autograd may fail. Use out-of-place operations, "
                f"`a = a - b` instead of `a -= b`, `a.sub_(b)` or `a[...] = ...`."
            )
    return out, _type_problem(out, ex)


def _call_reference(ex: _Exercise, inputs: dict) -> torch.Tensor:
    tensors = [inputs[name] for name in ex.tensor_names]
    return ex.reference(*tensors, **{k: v for k, v in inputs.items() if k not in ex.tensor_names})


def _type_problem(out, ex: _Exercise) -> str | None:
    """A diagnosis when ``out`` is not a floating-point torch tensor."""
    per = f"one loss per {ex.unit}, a tensor of shape (B,)"
    if isinstance(out, torch.Tensor):
        if out.is_floating_point():
            return None
        return (f"Your function returns a tensor of dtype {out.dtype}; losses are floating point ({per}). "
                "Look for integer division, a comparison, or .long().")
    if out is None:
        return f"Your function returns None: did you forget `return`? Return {per}."
    kind = type(out).__name__
    if type(out).__module__.startswith("numpy"):
        return (f"Your function returns a numpy {kind}: stay in torch (numpy cuts the autograd graph, so no "
                f"gradient would reach the policy). Return {per}.")
    if isinstance(out, float):
        return (f"Your function returns a Python float (.item() or float(...)?): that cuts the autograd graph "
                f"and loses the batch. Return {per}.")
    if isinstance(out, tuple):
        return f"Your function returns a tuple: return only the losses, {per}."
    if isinstance(out, list):
        return (f"Your function returns a Python list: return {per}, built with torch operations "
                "(torch.stack turns a list of tensors into one tensor).")
    return f"Your function returns a value of type {kind}; return {per}."


_EXCEPTION_HINTS = (
    ("must be Tensor, not list", "torch functions take tensors, not Python lists: combine a list of tensors with "
                                 "torch.stack([...]) first (the seed's rrhf_loss has this bug)."),
    ("BFloat16", "numpy has no bfloat16: stay in torch."),
)


def _exception_problem(exc: Exception, case: Case, ex: _Exercise) -> str:
    """'Your function raised TypeError: ... on the case: ...' plus a hint for the common ones."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)  # no memory addresses: the output must be deterministic
    text = text if len(text) <= 200 else text[:197] + "..."
    message = f"Your function raised {type(exc).__name__}" + (f": {text}" if text else "") + f" (on the case: {case.name})."
    for needle, hint in _EXCEPTION_HINTS:
        if needle in str(exc):
            message += " " + hint
    return message


def _signature_problem(fn, tensors, hyper, ex: _Exercise) -> str | None:
    """A diagnosis when ``fn`` cannot take the library's arguments (four tensors, then keywords)."""
    try:
        inspect.signature(fn).bind(*tensors, **hyper)
    except TypeError as exc:
        defaults = inspect.signature(ex.reference).parameters
        keywords = ", ".join(f"{k}={defaults[k].default}" for k in hyper)
        return (f"Your function cannot take the library's arguments ({exc}). Give it the library's signature: "
                f"def my_{ex.reference.__name__}({', '.join(ex.tensor_names)}, *, {keywords}).")
    except ValueError:  # no signature to read (a builtin): just call it
        pass
    return None


_REDUCTIONS = {
    "none": (lambda t: t, ""),
    "mean": (lambda t: t.mean(), "Your function returns one number for the whole batch (its mean) instead of one "
                                 "loss per {unit}: return the (B,) tensor and let the caller take .mean()."),
    "sum": (lambda t: t.sum(), "Your function returns one number for the whole batch (its sum) instead of one "
                               "loss per {unit}: return the (B,) tensor and let the caller reduce it."),
}


def _known_mistake(outputs, views, tolerances, ex: _Exercise) -> str | None:
    """The first known mistake (optionally with a batch reduction) that reproduces every output.

    A second pass leaves out the extreme cases where the learner's output is not finite, and then adds the
    overflow note; the library's formula itself is tried as a "mistake" with no message of its own, so that
    a right formula that only overflows or only reduces the batch is recognised too.
    """
    right = Mistake("the library's formula", lambda v: ex.reference(*v.args, **v.kwargs), "")
    overflowed = [i for i, case in enumerate(ex.cases) if case.extreme and not bool(torch.isfinite(outputs[i]).all())]
    values = {}  # (mistake, case) -> the formula's losses, each computed once

    def value(mistake, i):
        if (mistake.name, i) not in values:
            values[mistake.name, i] = mistake.formula(views[i])
        return values[mistake.name, i]

    for skipped in ([], overflowed) if overflowed else ([],):
        kept = [i for i in range(len(outputs)) if i not in skipped]
        for mistake in (right, *ex.mistakes):
            for reduction, (reduce, note) in _REDUCTIONS.items():
                if mistake is right and reduction == "none" and not skipped:
                    continue
                if all(_close(outputs[i], reduce(value(mistake, i)), tolerances[i]) for i in kept):
                    seed = ex.seed if mistake is right and reduction == "mean" and skipped else ""
                    notes = [seed, mistake.message, note.format(unit=ex.unit), _OVERFLOW_NOTE if skipped else ""]
                    return "\n".join(n for n in notes if n)
    return None


def _shape_problem(outputs, expected, ex: _Exercise) -> str | None:
    """A diagnosis for the first case whose output has the wrong shape."""
    for case, out, want in zip(ex.cases, outputs, expected):
        if out.shape == want.shape:
            continue
        b = want.shape[0]
        got = tuple(out.shape)
        if b == 1 and out.dim() == 0:
            return (f"For a batch of size 1 your function returns shape () instead of (1,): keep the batch dimension "
                    f"(no .squeeze(), .item() or [0]); return one loss per {ex.unit}, shape (B,).")
        if out.dim() == 0:
            return (f"Your function returns a single number (shape ()) for a batch of {b}: return one loss per "
                    f"{ex.unit}, shape (B,), and let the caller take the mean.")
        if out.numel() == b:
            return (f"Your function returns shape {got} for a batch of {b}; expected ({b},), one loss per {ex.unit}. "
                    "Drop the extra dimension (keepdim=True, unsqueeze or view?).")
        return f"Your function returns shape {got} on the case: {case.name}; expected ({b},), one loss per {ex.unit}."
    return None


def _non_finite_problem(outputs, expected, ex: _Exercise) -> str | None:
    """A diagnosis for the first case where the output has inf/NaN and the library's does not."""
    for case, out, want in zip(ex.cases, outputs, expected):
        if bool(torch.isfinite(out).all()) or not bool(torch.isfinite(want).all()):
            continue
        if case.extreme:
            return _OVERFLOW_NOTE
        return (f"Your function returns inf or NaN on the case: {case.name}, where the library's losses are "
                f"finite (yours: {_fmt(out)}). Look for the log of a number <= 0, a square root of a negative number, "
                "or a division by zero.")
    return None


def _show_numbers(outputs, expected, tolerances, views, ex: _Exercise) -> str:
    """No known mistake: show the numbers of the first case that differs, and the checklist."""
    for case, out, want, tol, view in zip(ex.cases, outputs, expected, tolerances, views):
        if not _close(out, want, tol):
            library = f"{ex.reference_name} gives"
            return (f"On the case: {case.name} ({ex.explain(view)})\n"
                    f"  {library} {_fmt(want)}\n"
                    f"  {'your function gives'.rjust(len(library))} {_fmt(out)}\n"
                    f"{ex.hint}")
    return ex.hint  # not reached: some case differs


def _gradient_problem(fn, ex: _Exercise) -> str | None:
    """Check that gradients reach the policy's log-probs and match the library's (values are already right)."""
    for case in (c for c in ex.cases if c.check_grad):
        mine, ref = case.build(), case.build()
        for name in ex.grad_names:
            mine[name].requires_grad_(True)
            ref[name].requires_grad_(True)
        _call_reference(ex, ref).sum().backward()
        tensors = [mine[name] for name in ex.tensor_names]
        hyper = {k: v for k, v in mine.items() if k not in ex.tensor_names}
        try:
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fn(*tensors, **hyper)
                if not (isinstance(out, torch.Tensor) and out.requires_grad):
                    return (f"Your losses have the right values but are cut off from the autograd graph, so training "
                            f"would not change the policy. Don't use .detach(), .item(), .numpy(), .data, "
                            f"torch.no_grad() or torch.tensor(...) on values computed from the inputs.")
                out.sum().backward()
        except Exception as exc:
            return _exception_problem(exc, case, ex).replace(" (on the case:", " when the inputs require grad (on the case:")
        for name in ex.grad_names:
            got, want = mine[name].grad, ref[name].grad
            if got is None:
                return (f"The gradient does not reach {name}: part of your computation is detached "
                        "(.detach(), .item(), .data or torch.tensor(...)).")
            if not bool(torch.isfinite(got).all()):
                return (f"Your losses are right, but the gradient with respect to {name} is inf/NaN on the case: "
                        f"{case.name}. torch.where (or a clamp) around -torch.log(torch.sigmoid(z)) still "
                        "differentiates the branch that overflows; use -F.logsigmoid(z) instead.")
            if not _close(got, want, (1e-4, 1e-6)):
                return (f"Your losses are right, but the gradients with respect to {name} differ from the library's "
                        f"on the case: {case.name} (yours {_fmt(got)}, library {_fmt(want)}). Is part of the "
                        "computation detached (.detach(), .item(), .data)?")
    return None


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _tolerance(inputs: dict) -> tuple[float, float]:
    """(rtol, atol): loose for bfloat16/float16 inputs (about 3 significant digits), tight for float32."""
    low = any(isinstance(v, torch.Tensor) and v.dtype in (torch.bfloat16, torch.float16) for v in inputs.values())
    return (3e-2, 3e-2) if low else (1e-4, 1e-5)


def _close(got: torch.Tensor, want: torch.Tensor, tolerance) -> bool:
    """Same shape and allclose in float64 (inf equals inf, NaN equals NaN)."""
    if got.shape != want.shape:
        return False
    rtol, atol = tolerance
    return torch.allclose(got.detach().double(), want.detach().double(), rtol=rtol, atol=atol, equal_nan=True)


def _fmt(t: torch.Tensor) -> str:
    """Rounded numbers, 4 significant digits: '[0.576, 0.7194]' or '0.5'."""
    values = t.detach().double().flatten().tolist()
    text = [f"{v + 0.0:.4g}" for v in values]  # + 0.0 turns -0.0 into 0.0
    return text[0] if t.dim() == 0 else "[" + ", ".join(text) + "]"


def _name_of(fn) -> str:
    name = getattr(fn, "__name__", "")
    return name if name.isidentifier() else "your function"


def _checker_call(ex: _Exercise) -> str:
    return f"check_{ex.reference.__name__}(my_{ex.reference.__name__})"


def _say(*paragraphs: str) -> None:
    """Print paragraphs wrapped at 100 columns; lines that start with spaces (numbers) are kept as they are."""
    for paragraph in paragraphs:
        for line in paragraph.split("\n"):
            if line.startswith(" "):
                print(line)
            else:
                print(textwrap.fill(line, width=100, break_long_words=False, break_on_hyphens=False))
