"""Held-out evaluation: preference accuracy, KL from the reference, and the true reward of samples.

- **Preference accuracy**: the fraction of held-out pairs whose implicit reward is *strictly* higher
  for the chosen response, i.e. h > 0 with summed log-probs (TRL's ``rewards/accuracies``); it reads 0
  when the policy equals the reference.
- **KL(pi || pi_ref)**: sample y ~ pi for held-out prompts and sum the exact per-token KL along each
  sample (``course_lib.maths.kl.sequence_kl``): unbiased and low-variance. Schulman's k1 and k3 estimates
  from the same samples are reported beside it.
- **True reward**: the toy task's closed-form reward of the same samples (the DPO paper's
  reward-versus-KL view).

:func:`make_evaluator` builds the trainers' ``evaluate`` callback from these. A tiny model on the CPU is
evaluated on one torch thread (``toyworld.runtime.tiny_model_threads``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from ..maths.checks import check_int
from ..maths.kl import kl_estimators, sequence_kl
from ..maths.logprobs import sequence_logps
from ..maths.losses import log_ratio_margin
from ..toyworld.batching import encode_prompt_response
from ..toyworld.runtime import tiny_model_threads
from ..toyworld.sampling import sample_responses
from ..toyworld.task import true_rewards
from .scoring import autocast_for, borrowed, model_device, pair_logps

EVAL_KEYS = ("preference_accuracy", "kl", "kl_stderr", "kl_k1", "kl_k3", "reward", "reward_stderr")
SHOWN = 4  # samples kept in the result (``with_samples``)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How :func:`evaluate_policy` measures; it and :func:`make_evaluator` take these as keywords.

    ``n_samples`` prompts (cycled) are sampled with a generator seeded with ``seed``; ``reward_fn`` maps
    responses to a (N,) tensor (the toy task's true reward; None skips it: real models have none); no
    forward pass sees more than ``2 * batch_size`` sequences; ``with_samples`` keeps a few samples.
    """

    n_samples: int = 256
    seed: int = 0
    reward_fn: Callable | None = true_rewards
    with_samples: bool = True
    batch_size: int = 128

    def __post_init__(self):
        check_int("n_samples", self.n_samples, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        if self.reward_fn is not None and not callable(self.reward_fn):
            raise TypeError(
                f"reward_fn must be a function of the responses, or None to skip the reward, got {self.reward_fn!r}"
            )


def _mean_stderr(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    stderr = values.std(unbiased=True).item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return values.mean().item(), stderr


@torch.no_grad()
def pair_margins(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer,
    pairs: list[dict],
    *,
    length_normalize: bool = False,
    ref_logps: dict[str, torch.Tensor] | None = None,
    batch_size: int = 128,
) -> torch.Tensor:
    """The margin h of every pair, shape (N,): summed log-ratios, or each side's divided by its length.

    With ``length_normalize`` this is the margin TRL's IPO sees (each side's summed log-ratio over its
    completion length). ``ref_logps`` (from :func:`course_lib.loop.scoring.pair_logps`) saves the
    reference's forward passes when the same pairs are measured again.
    """
    policy_logps = pair_logps(policy, tokenizer, pairs, batch_size=batch_size)
    ref_logps = ref_logps if ref_logps is not None else pair_logps(reference, tokenizer, pairs, batch_size=batch_size)
    chosen_lengths, rejected_lengths = (
        (ref_logps["chosen_lengths"].clamp(min=1), ref_logps["rejected_lengths"].clamp(min=1))
        if length_normalize
        else (1, 1)
    )  # (N,) each, or no division
    return log_ratio_margin(
        policy_logps["chosen_logps"] / chosen_lengths,
        policy_logps["rejected_logps"] / rejected_lengths,
        ref_logps["chosen_logps"] / chosen_lengths,
        ref_logps["rejected_logps"] / rejected_lengths,
    ).cpu()


def preference_accuracy(policy, reference, tokenizer, pairs: list[dict], *, batch_size: int = 128) -> float:
    """Fraction of pairs with h > 0 (summed log-probs; strict, so ties count as wrong)."""
    return (pair_margins(policy, reference, tokenizer, pairs, batch_size=batch_size) > 0).float().mean().item()


@torch.no_grad()
def _chunk_kl(policy, reference, tokenizer, prompts: list, responses: list[str]) -> dict[str, torch.Tensor]:
    """Exact KL, k1 and k3 of one chunk of (prompt, sampled response) pairs, (n,) each on CPU."""
    batch = {k: v.to(model_device(policy)) for k, v in encode_prompt_response(tokenizer, prompts, responses).items()}
    with autocast_for(model_device(policy)):
        policy_logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    reference_device = model_device(reference)
    with autocast_for(reference_device):
        ref_logits = reference(
            input_ids=batch["input_ids"].to(reference_device),
            attention_mask=batch["attention_mask"].to(reference_device),
        ).logits.float()
    ref_logits = ref_logits.to(policy_logits.device)
    exact = sequence_kl(policy_logits, ref_logits, batch["labels"])
    estimates = kl_estimators(
        sequence_logps(policy_logits, batch["labels"]), sequence_logps(ref_logits, batch["labels"])
    )
    return {"kl": exact.cpu(), "k1": estimates["k1"].cpu(), "k3": estimates["k3"].cpu()}


def sample_kl(
    policy, reference, tokenizer, prompts: list, *, generator: torch.Generator, batch_size: int = 256
) -> dict:
    """Sample one response per prompt from the policy; per-sample exact KL, k1 and k3, and the samples.

    Forward passes see at most ``batch_size`` sequences.
    Returns ``{"responses": [str]*N, "kl": (N,), "k1": (N,), "k3": (N,)}`` (tensors on CPU, fp32).
    """
    responses = sample_responses(policy, tokenizer, prompts, generator=generator, batch_size=batch_size)
    parts = [
        _chunk_kl(policy, reference, tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size])
        for i in range(0, len(prompts), batch_size)
    ]
    return {"responses": responses, **{k: torch.cat([part[k] for part in parts]) for k in ("kl", "k1", "k3")}}


def _sampled_figures(policy, reference, tokenizer, prompts: list, settings: EvalSettings) -> dict:
    """KL (exact, k1, k3), reward and a few samples of ``n_samples`` responses to the cycled ``prompts``."""
    chosen_prompts = [prompts[i % len(prompts)] for i in range(settings.n_samples)]
    generator = torch.Generator().manual_seed(settings.seed)
    sampled = sample_kl(
        policy, reference, tokenizer, chosen_prompts, generator=generator, batch_size=2 * settings.batch_size
    )
    result = dict(zip(("kl", "kl_stderr"), _mean_stderr(sampled["kl"])))
    result["kl_k1"] = sampled["k1"].double().mean().item()
    result["kl_k3"] = sampled["k3"].double().mean().item()
    if settings.reward_fn is not None:
        rewards = torch.as_tensor(settings.reward_fn(sampled["responses"]))
        result["reward"], result["reward_stderr"] = _mean_stderr(rewards)
    if settings.with_samples:
        shown = zip(chosen_prompts[:SHOWN], sampled["responses"][:SHOWN])
        result["samples"] = [{"prompt": p, "response": r} for p, r in shown]
    return result


@torch.no_grad()
def evaluate_policy(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer,
    *,
    pairs: list[dict] | None = None,
    prompts: list[str] | None = None,
    **settings,
) -> dict:
    """Evaluate a policy against its reference on held-out data.

    Args:
        pairs: held-out preference pairs, for :func:`preference_accuracy`.
        prompts: held-out prompts; ``n_samples`` of them (cycled) are sampled from the policy for the
            KL and the reward.
        settings: :class:`EvalSettings` keywords: ``n_samples`` (256), ``seed`` (0), ``reward_fn`` (the toy
            task's true reward; None skips it), ``with_samples`` (True), ``batch_size`` (128).

    Returns:
        dict with ``preference_accuracy``; ``kl``, ``kl_stderr``, ``kl_k1``, ``kl_k3`` (means over
        samples); ``reward``, ``reward_stderr``; and, if ``with_samples``, ``samples``: a few
        (prompt, response) pairs. Missing inputs give ``None`` for their entries.
    """
    options = EvalSettings(**settings)
    result = dict.fromkeys(EVAL_KEYS)
    with tiny_model_threads(policy):
        if pairs:
            result["preference_accuracy"] = preference_accuracy(
                policy, reference, tokenizer, pairs, batch_size=options.batch_size
            )
        if prompts:
            result.update(_sampled_figures(policy, reference, tokenizer, prompts, options))
    return result


def make_evaluator(
    reference: torch.nn.Module,
    tokenizer,
    *,
    every: int,
    pairs: list[dict] | None = None,
    prompts: list | None = None,
    margin_pairs: dict[str, list[dict]] | None = None,
    length_normalize: bool = False,
    **settings,
) -> Callable[[torch.nn.Module, int, int], dict | None]:
    """The trainers' ``evaluate`` callback: :func:`evaluate_policy` at step 0, every ``every`` steps and at the end.

    ``evaluate(policy, step, steps)`` returns None between evaluations. On CUDA the trainer keeps the
    reference on the CPU once its log-probs are precomputed; the callback brings it to the policy's
    device for each evaluation and sends it back after.

    Args:
        reference, tokenizer: the frozen reference the KL and the accuracy are measured against.
        every: evaluate when ``step % every == 0`` (step 0 included) and after the last step.
        pairs, prompts, settings: as in :func:`evaluate_policy` (``with_samples`` is False). To match a
            trainer's own batching, pass its ``batch_size``.
        margin_pairs: ``{name: pairs}``; each evaluation also stores ``margin/<name>``, the mean margin h
            over those pairs (:func:`pair_margins`, ``length_normalize`` as the loss sees it), e.g. the
            training pairs beside held-out ones, to see a policy memorise its sample.

    Example::

        evaluate = make_evaluator(reference, tokenizer, every=50, pairs=test_pairs, prompts=test_prompts)
        history = train_preference(policy, reference, train_pairs, loss="ipo", evaluate=evaluate)
        history.evals  # [{"step": 0, "preference_accuracy": ..., "kl": ..., ...}, {"step": 50, ...}, ...]
    """
    check_int("every", every, minimum=1)
    options = EvalSettings(**{**settings, "with_samples": False})
    if not pairs and not prompts:
        raise ValueError("make_evaluator needs held-out pairs (for the accuracy) or prompts (for the KL), got neither")
    if margin_pairs is not None and (
        not isinstance(margin_pairs, dict) or not all(isinstance(v, list) and v for v in margin_pairs.values())
    ):
        raise ValueError(f"margin_pairs must map names to non-empty lists of pairs, got {type(margin_pairs).__name__}")
    ref_sides: dict[str, dict] = {}

    def evaluate(policy: torch.nn.Module, step: int, steps: int) -> dict | None:
        if step % every and step != steps:
            return None
        with tiny_model_threads(policy), borrowed(reference, model_device(policy)):
            result = evaluate_policy(policy, reference, tokenizer, pairs=pairs, prompts=prompts, **vars(options))
            for name, some_pairs in (margin_pairs or {}).items():
                if name not in ref_sides:
                    ref_sides[name] = pair_logps(reference, tokenizer, some_pairs, batch_size=options.batch_size)
                margins = pair_margins(
                    policy, reference, tokenizer, some_pairs, length_normalize=length_normalize,
                    ref_logps=ref_sides[name], batch_size=options.batch_size,
                )  # fmt: skip
                result[f"margin/{name}"] = margins.double().mean().item()
        return result

    return evaluate
