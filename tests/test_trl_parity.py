"""Parity with TRL: one ``DPOTrainer`` step (learning rate 0) logs what ``course_lib`` computes.

TRL 1.16's ``DPOTrainer`` runs one optimiser step, with ``learning_rate=0``, on the toy reference model
and a batch of toy pairs, for ``loss_type`` in {"sigmoid", "ipo", "hinge"}. Its logged ``loss``,
``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen`` and
``logps/rejected`` must equal ``course_lib``'s on the same batch within 1e-4 relative.

The policy is the reference plus a small seeded perturbation, so that h != 0 and every metric is
non-trivial (at step 0 of real training, policy == reference and every reward reads 0).

Where the conventions differ (read from ``trl/trainer/dpo_trainer.py``, 1.16.0):

- **Tokenization.** TRL joins ``prompt + chosen`` as *strings*, appends the eos token as a string, and
  tokenizes; the completion starts where the prompt's ids and the joined ids diverge. The toy data's
  continuations start with a space, so this gives exactly ``course_lib.toyworld.batching.encode_prompt_response``'s
  ids (checked below). A dataset whose continuations lack the space can differ at the boundary.
- **Log-probs.** TRL sums per-token log-probs over the completion (eos included) for every loss; for
  ``loss_type="ipo"`` it divides the chosen and rejected log-ratios by their completion lengths *inside
  the loss* only. ``course_lib.loop.training.train_preference(length_normalize=True)`` does the same: the
  loss sees averaged log-probs, the metrics see summed ones.
- **Metrics for IPO.** ``rewards/chosen``, ``rewards/rejected`` and ``rewards/margins`` are
  ``beta * (summed log-ratio)`` whatever the loss: for IPO, ``rewards/margins / beta`` is NOT the margin
  the IPO loss pulls towards ``1/(2 beta)`` (that one uses averaged log-probs; ``course_lib``'s history
  keeps it as ``margin``). Both are checked below.
- **Names.** TRL's ``loss_type="sigmoid"`` is ``course_lib``'s ``"dpo"``; IPO's tau is TRL's ``beta``.
- **Label smoothing.** TRL 1.16 ignores ``label_smoothing`` for ``"sigmoid"``: it only enters the
  ``"robust"``, ``"exo_pair"`` and ``"aot"`` losses. ``course_lib``'s ``dpo_loss(label_smoothing=eps)``
  (cDPO) has no TRL 1.16 setting; its ``"robust"`` loss is a different, unbiased correction.
- **Precision.** ``DPOConfig`` defaults to ``bf16=True``; parity needs fp32 (``bf16=False``), as
  ``course_lib`` uses on CPU.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

pytest.importorskip("trl")

from course_lib.loop.scoring import pair_logps  # noqa: E402
from course_lib.maths.losses import PAIRWISE_LOSSES, log_ratio_margin  # noqa: E402
from course_lib.maths.metrics import preference_metrics  # noqa: E402
from course_lib.toyworld.batching import encode_prompt_response  # noqa: E402
from course_lib.toyworld.data import load_preferences  # noqa: E402
from course_lib.toyworld.models import load_model_and_tokenizer  # noqa: E402

N_PAIRS = 16  # one batch: TRL's shuffling cannot change which pairs it sees
BETA = 0.5
TRL_TO_COURSE = {"sigmoid": "dpo", "ipo": "ipo", "hinge": "hinge"}
METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
REL = 1e-4
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def approx(value):
    return pytest.approx(value, rel=REL, abs=1e-7)


@pytest.fixture(scope="module")
def toy():
    """(reference, policy, tokenizer, pairs): the policy is the reference plus seeded noise."""
    reference, tokenizer = load_model_and_tokenizer()
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    pairs = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in load_preferences("train")[:N_PAIRS]]
    return reference, policy, tokenizer, pairs


def run_trl_step(reference, policy, tokenizer, pairs, loss_type, out_dir, **overrides):
    """One DPOTrainer step with learning rate 0; returns (logged metrics of step 1, the trainer)."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from trl import DPOConfig, DPOTrainer

    disable_progress_bar()
    config = dict(
        output_dir=str(out_dir),
        learning_rate=0.0,
        max_steps=1,
        per_device_train_batch_size=len(pairs),
        loss_type=loss_type,
        beta=BETA,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        disable_dropout=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )
    config.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' gradient_checkpointing rename
        args = DPOConfig(**config)
        trainer = DPOTrainer(
            model=copy.deepcopy(policy),
            ref_model=copy.deepcopy(reference),
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer,
        )
        trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry and entry.get("step") == 1)
    return logged, trainer


def course_values(reference, policy, tokenizer, pairs, loss: str) -> dict[str, float]:
    """course_lib's loss and TRL-keyed metrics on the whole batch, with TRL's normalisation."""
    pol = pair_logps(policy, tokenizer, pairs)
    ref = pair_logps(reference, tokenizer, pairs)
    summed = (pol["chosen_logps"], pol["rejected_logps"], ref["chosen_logps"], ref["rejected_logps"])
    if loss == "ipo":  # TRL divides by the completion lengths (eos included) for IPO only
        len_c, len_r = pol["chosen_lengths"].float(), pol["rejected_lengths"].float()
        seen = (summed[0] / len_c, summed[1] / len_r, summed[2] / len_c, summed[3] / len_r)
    else:
        seen = summed
    values = dict(preference_metrics(*summed, beta=BETA))
    values["loss"] = PAIRWISE_LOSSES[loss](*seen, beta=BETA).mean().item()
    values["margin"] = log_ratio_margin(*seen).mean().item()
    return values


def test_trl_tokenizes_the_toy_pairs_like_encode_prompt_response(toy, tmp_path):
    reference, policy, tokenizer, pairs = toy
    _, trainer = run_trl_step(reference, policy, tokenizer, pairs[:4], "sigmoid", tmp_path)
    for row, pair in zip(trainer.train_dataset, pairs[:4]):
        for side in ("chosen", "rejected"):
            ours = encode_prompt_response(tokenizer, [pair["prompt"]], [pair[side]])
            n = int(ours["attention_mask"].sum())
            assert row["prompt_ids"] + row[f"{side}_ids"] == ours["input_ids"][0, :n].tolist()
            assert row[f"{side}_ids"] == ours["labels"][0, len(row["prompt_ids"]) : n].tolist()


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_trainer_step_matches_course_lib(toy, tmp_path, loss_type):
    reference, policy, tokenizer, pairs = toy
    logged, _ = run_trl_step(reference, policy, tokenizer, pairs, loss_type, tmp_path)
    ours = course_values(reference, policy, tokenizer, pairs, TRL_TO_COURSE[loss_type])
    # what a real DPOTrainer step logs under rewards/* and logps/* is exactly preference_metrics' keys
    assert {key for key in logged if key.startswith(("rewards/", "logps/"))} == set(ours) - {"loss", "margin"}
    assert logged["loss"] == approx(ours["loss"])
    for key in METRICS:
        assert logged[key] == approx(ours[key]), key
    # the metrics are non-trivial: the policy differs from the reference
    assert abs(ours["rewards/margins"]) > 0.1 and 0.0 < ours["rewards/accuracies"] < 1.0
    if loss_type == "ipo":
        # TRL's rewards/margins is beta * (summed h); the IPO loss sees the length-averaged h, which differs
        assert abs(logged["rewards/margins"] / BETA - ours["margin"]) > 0.1
        # and an IPO loss on summed log-probs would not match TRL's logged loss
        pol, ref = pair_logps(policy, tokenizer, pairs), pair_logps(reference, tokenizer, pairs)
        unnormalised = (
            PAIRWISE_LOSSES["ipo"](
                pol["chosen_logps"], pol["rejected_logps"], ref["chosen_logps"], ref["rejected_logps"], beta=BETA
            )
            .mean()
            .item()
        )
        assert abs(unnormalised - logged["loss"]) > 0.1 * logged["loss"]


def test_precomputed_reference_logps_give_the_same_step(toy, tmp_path):
    """``precompute_ref_log_probs=True`` (course_lib always precomputes) changes nothing in the numbers."""
    reference, policy, tokenizer, pairs = toy
    logged, trainer = run_trl_step(reference, policy, tokenizer, pairs, "ipo", tmp_path, precompute_ref_log_probs=True)
    ref = pair_logps(reference, tokenizer, pairs)
    stored = trainer.train_dataset
    assert torch.tensor(stored["ref_chosen_logps"]) == pytest.approx(ref["chosen_logps"], rel=REL, abs=1e-5)
    assert torch.tensor(stored["ref_rejected_logps"]) == pytest.approx(ref["rejected_logps"], rel=REL, abs=1e-5)
    ours = course_values(reference, policy, tokenizer, pairs, "ipo")
    assert logged["loss"] == approx(ours["loss"])
    assert logged["rewards/margins"] == approx(ours["rewards/margins"])
