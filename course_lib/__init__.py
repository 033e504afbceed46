"""course_lib: reference implementations for Chapter 18, RRHF and IPO.

Four layers, each importing only from the layers before it (``tests/test_layering.py`` checks it):
``maths`` (log-probs, losses, metrics, KL, the bandit's closed forms), ``toyworld`` (the toy task, its
data and models, the bandit world), ``loop`` (device, scoring, training, evaluation) and ``teaching``
(plots, widgets, exercise checkers); the CLIs ``compare`` and ``build_data`` sit on top.
"""

from .loop.device import default_device
from .maths.kl import kl_estimators, sequence_kl
from .maths.logprobs import IGNORE_INDEX, sequence_logps, token_logps
from .maths.losses import (
    PAIRWISE_LOSSES,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log_ratio_margin,
    rrhf_loss,
    rrhf_loss_terms,
    rrhf_scores,
)
from .maths.metrics import implicit_rewards, preference_metrics
from .toyworld.ipo_optimum_pairs import ipo_optimal_margins

__all__ = [
    "IGNORE_INDEX",
    "PAIRWISE_LOSSES",
    "default_device",
    "dpo_loss",
    "hinge_loss",
    "implicit_rewards",
    "ipo_loss",
    "ipo_optimal_margins",
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
