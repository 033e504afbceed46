"""Exercise checkers for Chapter 18: ``check_dpo_loss``, ``check_ipo_loss`` and ``check_rrhf_loss``.

A learner writes ``my_dpo_loss`` (``my_ipo_loss``, and as a bonus ``my_rrhf_loss``) with the library
function's signature and calls ``check_dpo_loss(my_dpo_loss)``. The checker prints one verdict, a tick
or a diagnosis saying what to change, and returns True or False. It never raises for a mistake in the
learner's function, and its text is deterministic (notebooks that call it are checked by nbval).

How it decides:

1. It runs the function on every prepared case (``PAIRWISE_CASES`` or ``RANKING_CASES``: several
   betas, a batch of size 1, extreme margins, bfloat16 inputs), with warnings silenced. An exception,
   an input changed in place, or a result that is not a floating-point tensor stops it there.
2. It compares each result with the library's own function (``course_lib.maths.losses``) on the same
   inputs, with a tolerance that suits the inputs' dtype.
3. If a result differs, it looks for a known mistake *by behaviour*: it evaluates each formula of
   ``DPO_MISTAKES`` / ``IPO_MISTAKES`` / ``RRHF_MISTAKES``, in order, on the same inputs (in float64)
   and reports the first one that reproduces the learner's numbers on every case; also when the
   learner returns the batch mean or sum instead of one loss per pair (or per prompt), and when the
   learner's function overflows to inf/NaN on the extreme cases only. Otherwise it reports a wrong
   shape, inf/NaN, or shows the numbers of the first case that differs with a checklist.
4. If every value is right, it checks that ``.backward()`` reaches the policy's log-probs and gives
   the library's gradients.

5. It traces one call of the learner's function: one that calls the library's own loss is told so (and
   fails), and the grader reports it to the instructor.

:func:`diagnose` returns the same verdict as a :class:`Verdict` without printing it (the grader's way in).
:func:`check_run` and :func:`check_sweep` check the exercise's training runs against the expected figures
(:mod:`.expected`, the one place they are written).

The cases never use ``beta = 1``, where several of the mistakes coincide with the right formula.
Two wrong formulas that agree on every input cannot be told apart; each message then names both
(for example, swapping chosen and rejected is the same as flipping the sign of ``h``).
"""

from .engine import Case, Mistake, Verdict, diagnose, run_checker
from .pairwise import DPO_EXERCISE, DPO_MISTAKES, IPO_EXERCISE, IPO_MISTAKES, PAIRWISE_CASES
from .ranking import RANKING_CASES, RRHF_EXERCISE, RRHF_MISTAKES
from .runs import RunProblem, check_run, check_sweep, diagnose_run, diagnose_sweep

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
    "DPO_EXERCISE",
    "IPO_EXERCISE",
    "RRHF_EXERCISE",
    "Verdict",
    "diagnose",
    "RunProblem",
    "check_run",
    "check_sweep",
    "diagnose_run",
    "diagnose_sweep",
]


def check_dpo_loss(fn) -> bool:
    """Check a learner's
    ``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta)``
    against :func:`course_lib.maths.losses.dpo_loss`. Prints a verdict; returns True when it matches."""
    return run_checker(fn, DPO_EXERCISE)


def check_ipo_loss(fn) -> bool:
    """Check a learner's
    ``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta)``
    against :func:`course_lib.maths.losses.ipo_loss`. Prints a verdict; returns True when it matches."""
    return run_checker(fn, IPO_EXERCISE)


def check_rrhf_loss(fn) -> bool:
    """Check a learner's ``fn(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty, sft_weight)``
    against :func:`course_lib.maths.losses.rrhf_loss`. Prints a verdict; returns True when it matches."""
    return run_checker(fn, RRHF_EXERCISE)
