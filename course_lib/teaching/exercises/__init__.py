"""Exercise checkers for Chapter 18: ``check_dpo_loss``, ``check_ipo_loss`` and ``check_rrhf_loss``.

A learner writes ``my_dpo_loss`` (``my_ipo_loss``, and as a bonus ``my_rrhf_loss``) with the library
function's signature and calls ``check_dpo_loss(my_dpo_loss)``. The checker prints one verdict, a tick, a
diagnosis saying what to change, or "not implemented yet", and returns True or False. It judges the
function by its outputs alone (:mod:`.engine`), never raises for a mistake in the learner's function, and
its text is deterministic (notebooks that call it are checked by nbval). :func:`diagnose` returns the same
verdict without printing it (the grader's way in).

:func:`check_run` and :func:`check_sweep` check the exercise's training runs (:mod:`.runs`) against the
expected figures (:mod:`.expected`, the one place they are written).
"""

from .engine import Case, Exercise, Mistake, Verdict, diagnose, run_checker
from .pairwise import DPO_MISTAKES, IPO_MISTAKES, PAIRWISE_CASES, pairwise_exercise
from .ranking import RANKING_CASES, RRHF_EXERCISE, RRHF_MISTAKES
from .runs import RunProblem, check_run, check_sweep, diagnose_run, diagnose_sweep

__all__ = [
    "DPO_EXERCISE",
    "DPO_MISTAKES",
    "IPO_EXERCISE",
    "IPO_MISTAKES",
    "PAIRWISE_CASES",
    "RANKING_CASES",
    "RRHF_EXERCISE",
    "RRHF_MISTAKES",
    "Case",
    "Exercise",
    "Mistake",
    "RunProblem",
    "Verdict",
    "check_dpo_loss",
    "check_ipo_loss",
    "check_rrhf_loss",
    "check_run",
    "check_sweep",
    "diagnose",
    "diagnose_run",
    "diagnose_sweep",
    "pairwise_exercise",
]

DPO_EXERCISE = pairwise_exercise("dpo")
IPO_EXERCISE = pairwise_exercise("ipo")


def check_dpo_loss(fn) -> bool:
    """Check a learner's ``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
    *, beta)`` against :func:`course_lib.maths.losses.dpo_loss`. Prints a verdict; True when it matches."""
    return run_checker(fn, DPO_EXERCISE)


def check_ipo_loss(fn) -> bool:
    """Check a learner's ``fn(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
    *, beta)`` against :func:`course_lib.maths.losses.ipo_loss`. Prints a verdict; True when it matches."""
    return run_checker(fn, IPO_EXERCISE)


def check_rrhf_loss(fn) -> bool:
    """Check a learner's ``fn(candidate_logps, candidate_lengths, candidate_rewards, *, length_penalty,
    sft_weight)`` against :func:`course_lib.maths.losses.rrhf_loss`. Prints a verdict; True when it matches."""
    return run_checker(fn, RRHF_EXERCISE)
