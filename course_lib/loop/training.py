"""Training loops for the toy world: preference losses (DPO, IPO, hinge, or yours), RRHF and SFT.

The loops only *call* the maths (``logprobs``, ``losses``, ``metrics``); they add batching, the
optimiser, a progress bar, a per-step history, and safe failure. Held-out evaluation comes in as a
callback, ``evaluate`` (minGPT's pattern): the trainer calls it and stores what it returns, and never
imports the evaluation layer, which builds the callback (:func:`course_lib.loop.evaluation.make_evaluator`).

- the reference model's log-probs are computed once, before training, and the reference is never
  trained (its parameters are untouched);
- chosen and rejected responses go through the policy in ONE forward pass;
- dropout is disabled (the model stays in eval mode), as TRL's DPOTrainer does by default, so that at
  step 0 the policy equals the reference;
- on CUDA the forward pass runs under bf16 autocast, and the reference leaves the GPU once its
  log-probs are computed (it comes back only for held-out evaluations);
- a non-finite loss, or a non-finite gradient with a finite loss, stops training *before* the optimiser
  step with a :class:`TrainingDiverged` naming the step: the weights are those after the step before,
  and ``error.history`` holds the steps done; Ctrl-C (KeyboardInterrupt) returns the history so far,
  with ``history.interrupted = True``, and leaves the model usable.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..maths.checks import check_finite
from ..maths.logprobs import IGNORE_INDEX
from ..maths.losses import (
    PairwiseLoss,
    log_ratio_margin,
    loss_spec,
    resolve_loss,
    reward_order_mask,
    rrhf_loss_terms,
    rrhf_scores,
)
from ..maths.metrics import preference_metrics
from ..toyworld.batching import encode_prompt_response
from ..toyworld.runtime import runs_tiny_models_on_one_thread
from .device import default_device
from .scoring import response_logps

#: ``evaluate(policy, step, steps) -> dict | None``: called before the first step (step 0) and after every step;
#: a dict is stored in ``history.evals`` with its step, None skips that step.
Evaluate = Callable[[torch.nn.Module, int, int], "dict | None"]
FIXED_WIDTH_UP_TO = 64  # tokens: pad every preference batch to the data set's longest pair up to this


class History(list):
    """One dict per optimiser step, plus ``evals`` (held-out evaluations) and ``interrupted``.

    A trainer also records what produced the run: ``loss`` (the loss's name, or the function's
    ``__name__``), ``beta``, ``length_normalize``, ``steps`` (asked for; ``len(history)`` is the number
    done) and ``seed``; None where it does not apply (RRHF has no beta) or when built by hand.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.evals: list[dict] = []
        self.interrupted = False
        self.loss: str | None = None
        self.beta: float | None = None
        self.length_normalize: bool | None = None
        self.steps: int | None = None
        self.seed: int | None = None

    def column(self, key: str) -> list[float]:
        """The values of ``key`` over steps, e.g. ``history.column("margin")``."""
        if self and key not in self[0]:
            raise KeyError(f"no {key!r} in the history; keys are {sorted(self[0])}")
        return [entry[key] for entry in self]


class TrainingDiverged(FloatingPointError):
    """Training stopped at ``step`` on a non-finite loss or gradient, before that step's optimiser update.

    ``history`` holds the steps done (and their evaluations); the weights are those after step ``step - 1``.
    """

    def __init__(self, message: str, *, step: int, history: History):
        super().__init__(message)
        self.step = step
        self.history = history


def check_count(name: str, value, *, minimum: int = 1) -> int:
    """Check that ``value`` is a whole number >= ``minimum`` (numpy integers count); return it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _nonfinite_gradients(named_params: list[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Names of the parameters whose gradient holds inf or NaN (one device sync for all of them)."""
    with_grad = [(name, p.grad) for name, p in named_params if p.grad is not None]
    if not with_grad:
        return []
    finite = torch.stack([torch.isfinite(g).all().to(with_grad[0][1].device) for _, g in with_grad])
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(with_grad, finite.tolist()) if not ok]


def default_length_normalize(loss: str | PairwiseLoss) -> bool:
    """Whether ``loss`` sees averaged log-probs when the caller does not say: True for "ipo" (TRL's
    ``loss_type="ipo"``, confirmed by the IPO authors), False for "dpo", "hinge" and any callable."""
    return loss_spec(loss).average_logps


def _resolve_tokenizer_and_device(tokenizer, device):
    """The toy tokenizer when none is given; ``default_device()`` when no device is given."""
    if tokenizer is None:
        from ..toyworld.models import load_model_and_tokenizer

        tokenizer = load_model_and_tokenizer()[1]
    return tokenizer, torch.device(device) if device is not None else default_device()


def _evaluate(evaluate: Evaluate | None, policy, step: int, steps: int, history: History) -> None:
    """Call the ``evaluate`` callback and keep what it returns (None: nothing at this step)."""
    if evaluate is not None:
        metrics = evaluate(policy, step, steps)
        if metrics is not None:
            history.evals.append({"step": step, **metrics})


def _run(policy, *, steps, lr, seed, device, progress, desc, step_fn, evaluate=None) -> History:
    """The loop shared by every trainer: optimiser, progress bar, finite check, interrupts, evaluation."""
    steps = check_count("steps", steps)
    lr = check_finite("lr", lr, minimum=0.0)
    named_params = [(name, p) for name, p in policy.named_parameters() if p.requires_grad]
    if not named_params:
        raise ValueError(
            "policy has no trainable parameters (requires_grad is False everywhere): "
            "call policy.requires_grad_(True), or pass a copy of the model that is not frozen"
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    policy.to(device)
    policy.eval()  # no dropout; gradients still flow
    params = [p for _, p in named_params]
    # fused Adam updates all parameters in one kernel (about 4x faster on CPU for the toy model)
    fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    optimizer = torch.optim.Adam(params, lr=lr, fused=fused)
    history = History()
    history.steps, history.seed = steps, seed  # what produced the run (the trainer adds the loss)
    _evaluate(evaluate, policy, 0, steps, history)
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False)
    try:
        for step in bar:
            loss, record = step_fn(generator)
            if not loss.requires_grad:
                raise TypeError(
                    f"{desc}: the loss at step {step} does not require grad, so nothing can be trained: did the "
                    "loss function detach its inputs, call .item() or build a new tensor from the numbers?"
                )
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"{desc}: the loss became {loss.item()} at step {step}; training stopped before that step's "
                    "update. Try a smaller lr or beta, or check the loss function for log(0) or overflow.",
                    step=step,
                    history=history,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bad = _nonfinite_gradients(named_params)
            if bad:  # a finite loss with a NaN gradient: Adam would write NaN into every weight
                optimizer.zero_grad(set_to_none=True)
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                raise TrainingDiverged(
                    f"{desc}: the gradient became non-finite at step {step} (in {shown}) while the loss was "
                    f"{loss.item():.6g}; training stopped before that step's update, so the weights are those "
                    f"after step {step - 1}. Check the loss function for sqrt(0), log(0) or division by zero.",
                    step=step,
                    history=history,
                )
            optimizer.step()
            history.append({"step": step, "loss": loss.item(), **record})
            if progress:
                bar.set_postfix(loss=f"{loss.item():.3g}", refresh=False)
            _evaluate(evaluate, policy, step, steps, history)
    except KeyboardInterrupt:
        history.interrupted = True
    except Exception as err:  # any other failure keeps the steps done: ``err.history``
        if not hasattr(err, "history"):
            try:
                err.history = history
            except (AttributeError, TypeError):
                pass
        raise
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)
        policy.eval()
    return history


def _check_records(records, name: str, fields: tuple[str, ...]) -> None:
    """Every record is a dict holding ``fields``; the first one that is not is named by its index."""
    if isinstance(records, (str, bytes, dict)) or not hasattr(records, "__len__"):
        raise TypeError(f"{name} must be a list of dicts with {list(fields)}, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{name} is empty")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise TypeError(f"{name}[{i}] must be a dict with {list(fields)}, got {type(record).__name__}")
        missing = [f for f in fields if f not in record]
        if missing:
            raise ValueError(f"{name}[{i}] has no {missing[0]!r} (it has {sorted(record)}; expected {list(fields)})")


def context_limit(model) -> int | None:
    """The number of positions the model can attend to (GPT-2's ``n_positions``, Llama's
    ``max_position_embeddings``), or None when its config does not say."""
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(model, encoded: dict[str, torch.Tensor], describe: Callable[[int], str]) -> None:
    """Every encoded row fits the model's context; the first that does not is named by ``describe(row)``."""
    limit = context_limit(model)
    if limit is None:
        return
    lengths = encoded["attention_mask"].sum(-1)  # (N,) prompt + response + eos
    too_long = torch.nonzero(lengths > limit).flatten()
    if too_long.numel():
        row = int(too_long[0])
        raise ValueError(
            f"{describe(row)} is {int(lengths[row])} tokens long (prompt + response + eos), but the model allows "
            f"{limit} positions ({too_long.numel()} row(s) too long); shorten or drop those examples"
        )


def _batch_indices(generator: torch.Generator, n: int, batch_size: int) -> torch.Tensor:
    """``batch_size`` indices drawn without replacement from range(n) (with replacement if n is smaller)."""
    if batch_size <= n:
        return torch.randperm(n, generator=generator)[:batch_size]
    return torch.randint(n, (batch_size,), generator=generator)


@runs_tiny_models_on_one_thread
def train_preference(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    pairs: list[dict],
    *,
    loss: str | PairwiseLoss = "dpo",
    beta: float = 0.1,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 1e-3,
    length_normalize: bool | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    tokenizer=None,
    evaluate: Evaluate | None = None,
    progress: bool = True,
    loss_kwargs: dict | None = None,
) -> History:
    """Train ``policy`` in place on preference pairs with a pairwise loss; the reference stays frozen.

    Each step draws ``batch_size`` pairs, computes the policy's log-probs of chosen and rejected in
    one forward pass, and minimises ``loss(pc, pr, rc, rr, beta=beta).mean()``.

    Log-probs fed to the loss are summed over response tokens, or averaged when ``length_normalize``;
    ``None`` means True for "ipo" (TRL's convention, confirmed by the IPO authors) and False otherwise
    (a callable loss gets False unless you say so). The history's TRL metrics (``rewards/*``,
    ``logps/*``) always use summed log-probs, as TRL logs them; ``margin`` is the mean h *as the loss
    sees it* (averaged log-probs when length-normalised).

    Args:
        policy, reference: causal LMs with the same tokenizer (the policy usually starts as a copy).
        pairs: dicts with "prompt", "chosen", "rejected" strings.
        loss: "dpo", "ipo", "hinge", or a callable with the library losses' signature.
        evaluate: a callback ``evaluate(policy, step, steps)`` called at step 0 and after every step; what
            it returns (unless None) goes into ``history.evals``. Build it with
            :func:`course_lib.loop.evaluation.make_evaluator` (held-out accuracy, KL and reward every n steps).
        loss_kwargs: extra keywords for the loss, e.g. ``{"label_smoothing": 0.1}`` for cDPO.

    Returns:
        :class:`History`, one dict per step: step, loss, margin, and TRL's rewards/* and logps/* keys.
    """
    loss_fn = resolve_loss(loss)
    if length_normalize is None:
        length_normalize = default_length_normalize(loss)
    _check_records(pairs, "pairs", ("prompt", "chosen", "rejected"))
    batch_size = check_count("batch_size", batch_size)
    check_count("steps", steps)
    check_finite("lr", lr, minimum=0.0)
    tokenizer, device = _resolve_tokenizer_and_device(tokenizer, device)
    reference.to(device).eval()

    prompts = [p["prompt"] for p in pairs]
    chosen = encode_prompt_response(tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected = encode_prompt_response(tokenizer, prompts, [p["rejected"] for p in pairs])
    check_fits(policy, chosen, lambda row: f"pairs[{row}] (prompt + chosen)")
    check_fits(policy, rejected, lambda row: f"pairs[{row}] (prompt + rejected)")
    width = max(chosen["input_ids"].shape[1], rejected["input_ids"].shape[1])
    # Short data (the toy world): every forward pass has the same width, so at step 1 the policy's
    # log-probs equal the precomputed reference's bit for bit. Long data (real models): trim each batch
    # to its longest row, for memory; h at step 1 is then 0 only up to float round-off.
    trim = width > FIXED_WIDTH_UP_TO
    both = {
        k: torch.cat([_pad_to(chosen[k], width, k, tokenizer), _pad_to(rejected[k], width, k, tokenizer)])
        for k in chosen
    }
    n = len(pairs)
    with torch.no_grad():  # reference log-probs, once, on the same fixed-width rows the policy sees
        ref_logps = torch.cat(
            [
                response_logps(reference, {k: v[rows] for k, v in both.items()}, trim=trim)[0].cpu()
                for rows in torch.arange(2 * n).split(2 * batch_size)
            ]
        )
    ref = {"chosen_logps": ref_logps[:n], "rejected_logps": ref_logps[n:]}
    if device.type == "cuda":  # release the reference: training needs only its log-probs
        reference.to("cpu")
        torch.cuda.empty_cache()
    extra = dict(loss_kwargs or {})

    def step_fn(generator):
        idx = _batch_indices(generator, n, batch_size)
        batch = {k: v[torch.cat([idx, idx + n])] for k, v in both.items()}
        logps, lengths = response_logps(policy, batch, trim=trim)  # (2b,)
        b = len(idx)
        summed = {  # (b,) each, in the losses' argument order
            "policy_chosen_logps": logps[:b],
            "policy_rejected_logps": logps[b:],
            "ref_chosen_logps": ref["chosen_logps"][idx].to(logps.device),
            "ref_rejected_logps": ref["rejected_logps"][idx].to(logps.device),
        }
        if length_normalize:  # each log-prob divided by its response's length
            chosen_lengths, rejected_lengths = lengths[:b].to(logps.dtype), lengths[b:].to(logps.dtype)
            seen = {
                name: value / (chosen_lengths if "chosen" in name else rejected_lengths)
                for name, value in summed.items()
            }
        else:
            seen = summed
        per_pair = loss_fn(*seen.values(), beta=beta, **extra)
        if not isinstance(per_pair, torch.Tensor):
            raise TypeError(f"the loss function must return a torch.Tensor, got {type(per_pair).__name__}")
        with torch.no_grad():
            record = {
                "margin": log_ratio_margin(*seen.values()).mean().item(),
                **preference_metrics(*summed.values(), beta=beta),
            }
        return per_pair.mean(), record

    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom loss")
    history = _run(
        policy,
        steps=steps,
        lr=lr,
        seed=seed,
        device=device,
        progress=progress,
        desc=f"{name} (beta={beta})",
        step_fn=step_fn,
        evaluate=evaluate,
    )
    history.loss, history.beta, history.length_normalize = name, beta, bool(length_normalize)
    return history


def _pad_to(tensor: torch.Tensor, width: int, key: str, tokenizer) -> torch.Tensor:
    """Right-pad an encoded (N, T) tensor to (N, width) with the value padding uses for ``key``."""
    fill = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}[key]
    pad = torch.full((tensor.shape[0], width - tensor.shape[1]), fill, dtype=tensor.dtype)
    return torch.cat([tensor, pad], dim=1)


@runs_tiny_models_on_one_thread
def train_rrhf(
    policy: torch.nn.Module,
    rankings: list[dict],
    *,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 1e-3,
    length_penalty: float = 1.0,
    sft_weight: float = 1.0,
    rank_weight: float = 1.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    tokenizer=None,
    evaluate: Evaluate | None = None,
    progress: bool = True,
) -> History:
    """Train ``policy`` in place with RRHF (Yuan et al. 2023, Eq. 5) on ranked candidate sets.

    Each step draws ``batch_size`` prompts, scores all their K candidates in one forward pass, and
    minimises ``rank_weight * L_rank + sft_weight * L_ft`` (mean over prompts; the paper's Eq. 5 has
    both weights 1). RRHF needs no reference model: only an ``evaluate`` callback holds one, for the
    held-out KL and preference accuracy.

    Args:
        rankings: dicts with "prompt", "responses" (K strings) and "rewards" (K floats).
        rank_weight: the weight of L_rank; 0 trains on the best candidate alone (fine-tuning on the
            best of K, the rejection-sampling fine-tuning that the RRHF paper compares with).
        evaluate: a callback, as in :func:`train_preference`.

    Returns:
        :class:`History` with step, loss, rank_loss, sft_loss, ``logps/candidates`` (mean summed log-prob
        of all candidates), ``logps/best`` (of the best one), and ``ranking_accuracy`` (fraction of
        reward-ordered pairs whose scores are in the same order).
    """
    _check_records(rankings, "rankings", ("prompt", "responses", "rewards"))
    batch_size = check_count("batch_size", batch_size)
    check_count("steps", steps)
    check_finite("lr", lr, minimum=0.0)
    rank_weight = check_finite("rank_weight", rank_weight, minimum=0.0)
    k = len(rankings[0]["responses"])
    if any(len(r["responses"]) != k or len(r["rewards"]) != k for r in rankings):
        raise ValueError("every ranking must have the same number K of responses and rewards")
    tokenizer, device = _resolve_tokenizer_and_device(tokenizer, device)
    encoded = encode_prompt_response(
        tokenizer, [r["prompt"] for r in rankings for _ in range(k)], [y for r in rankings for y in r["responses"]]
    )
    check_fits(policy, encoded, lambda row: f"rankings[{row // k}] (prompt + responses[{row % k}])")
    rewards = torch.tensor([r["rewards"] for r in rankings], dtype=torch.float32)  # (N, K)
    n = len(rankings)

    def step_fn(generator):
        idx = _batch_indices(generator, n, batch_size)  # (b,)
        rows = (idx.unsqueeze(1) * k + torch.arange(k)).flatten()  # (b*K,)
        logps, lengths = response_logps(policy, {key: v[rows] for key, v in encoded.items()})
        candidate_logps = logps.view(-1, k)  # (b, K)
        candidate_lengths = lengths.view(-1, k)
        candidate_rewards = rewards[idx].to(logps.device)
        rank, sft = rrhf_loss_terms(
            candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty
        )
        with torch.no_grad():
            scores = rrhf_scores(candidate_logps, candidate_lengths, length_penalty=length_penalty)  # (b, K)
            ordered = reward_order_mask(candidate_rewards)  # (b, K, K): r_i < r_j
            agree = reward_order_mask(scores) & ordered  # ... and p_i < p_j
            record = {
                "rank_loss": rank.mean().item(),
                "sft_loss": sft.mean().item(),
                "logps/candidates": candidate_logps.mean().item(),
                "logps/best": (-sft).mean().item(),
                "ranking_accuracy": (agree.sum() / ordered.sum().clamp(min=1)).item(),
            }
        return (rank_weight * rank + sft_weight * sft).mean(), record

    history = _run(
        policy,
        steps=steps,
        lr=lr,
        seed=seed,
        device=device,
        progress=progress,
        desc="rrhf",
        step_fn=step_fn,
        evaluate=evaluate,
    )
    history.loss = "rrhf"
    return history


@runs_tiny_models_on_one_thread
def train_sft(
    policy: torch.nn.Module,
    examples: list[dict],
    *,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    tokenizer=None,
    progress: bool = True,
) -> History:
    """Supervised fine-tuning: minimise the mean per-token negative log-likelihood of each response.

    Args:
        examples: dicts with a "prompt" string and a "completion" string (TRL's prompt-completion form,
            what :func:`course_lib.toyworld.data.load_sft_corpus` returns) or a "response" string; the
            prompt is not scored.

    Returns:
        :class:`History` with step and loss (nats per response token).
    """
    _check_records(examples, "examples", ("prompt",))
    batch_size = check_count("batch_size", batch_size)
    check_count("steps", steps)
    check_finite("lr", lr, minimum=0.0)
    responses = []
    for i, e in enumerate(examples):
        if "completion" not in e and "response" not in e:
            raise ValueError(f"examples[{i}] has neither 'completion' nor 'response' (it has {sorted(e)})")
        responses.append(e["completion"] if "completion" in e else e["response"])
    tokenizer, device = _resolve_tokenizer_and_device(tokenizer, device)
    encoded = encode_prompt_response(tokenizer, [e["prompt"] for e in examples], responses)
    check_fits(policy, encoded, lambda row: f"examples[{row}] (prompt + completion)")

    def step_fn(generator):
        idx = _batch_indices(generator, len(examples), batch_size)
        logps, lengths = response_logps(policy, {k: v[idx] for k, v in encoded.items()})
        return -(logps.sum() / lengths.sum()), {}

    return _run(policy, steps=steps, lr=lr, seed=seed, device=device, progress=progress, desc="sft", step_fn=step_fn)
