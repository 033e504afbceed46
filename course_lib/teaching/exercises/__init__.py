"""Exercise checkers for Chapter 18. A learner writes ``my_dpo_loss`` (``my_ipo_loss``, ``my_rrhf_loss``) with the
library function's signature and calls ``check_dpo_loss(my_dpo_loss)``: it prints one deterministic verdict (a
tick, what to change, or "not implemented yet"), returns True or False, and never raises for the learner's
mistakes. ``check_run`` and ``check_sweep`` check the exercise's training runs (:mod:`.runs`).
"""

from .engine import run_checker
from .pairwise import pairwise_exercise
from .ranking import RRHF_EXERCISE
from .runs import check_run, check_sweep

__all__ = ["check_dpo_loss", "check_ipo_loss", "check_rrhf_loss", "check_run", "check_sweep"]

DPO_EXERCISE = pairwise_exercise("dpo")
IPO_EXERCISE = pairwise_exercise("ipo")


def check_dpo_loss(fn) -> bool:
    """Check a learner's ``fn`` against :func:`course_lib.maths.losses.dpo_loss`; True when it matches."""
    return run_checker(fn, DPO_EXERCISE)


def check_ipo_loss(fn) -> bool:
    """Check a learner's ``fn`` against :func:`course_lib.maths.losses.ipo_loss`; True when it matches."""
    return run_checker(fn, IPO_EXERCISE)


def check_rrhf_loss(fn) -> bool:
    """Check a learner's ``fn`` against :func:`course_lib.maths.losses.rrhf_loss`; True when it matches."""
    return run_checker(fn, RRHF_EXERCISE)
