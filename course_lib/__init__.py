"""course_lib: reference implementations for Chapter 18, RRHF and IPO.

The maths lives in ``logprobs``, ``losses``, ``metrics`` and ``kl``; everything else calls them.
"""

from .device import default_device
from .kl import kl_estimators, sequence_kl
from .logprobs import IGNORE_INDEX, sequence_logps, token_logps
from .losses import (
    PAIRWISE_LOSSES,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log_ratio_margin,
    rrhf_loss,
    rrhf_loss_terms,
    rrhf_scores,
)
from .metrics import implicit_rewards, preference_metrics

__all__ = [
    "IGNORE_INDEX",
    "PAIRWISE_LOSSES",
    "default_device",
    "dpo_loss",
    "hinge_loss",
    "implicit_rewards",
    "ipo_loss",
    "kl_estimators",
    "log_ratio_margin",
    "preference_metrics",
    "rrhf_loss",
    "rrhf_loss_terms",
    "rrhf_scores",
    "sequence_kl",
    "sequence_logps",
    "token_logps",
]
