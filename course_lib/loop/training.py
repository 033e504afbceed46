"""Training loops for the toy world: preference losses (any entry of ``PAIRWISE_LOSSES``, or yours), RRHF and SFT.

The loops only *call* the maths (``logprobs``, ``losses``, ``metrics``); they add batching, the
optimiser, a progress bar, a per-step history, and safe failure. Held-out evaluation comes in as a
callback, ``evaluate`` (minGPT's pattern): the trainer calls it and stores what it returns, and never
imports the evaluation layer, which builds the callback (:func:`course_lib.loop.evaluation.make_evaluator`).

- the reference model's log-probs are computed once, before training, and the reference is never
  trained; a reference-free loss (``needs_reference=False``) runs no reference forward pass at all;
- chosen and rejected responses go through the policy in ONE forward pass;
- dropout is disabled (the model stays in eval mode), as TRL's DPOTrainer does by default, so that at
  step 0 the policy equals the reference;
- on CUDA the forward pass runs under bf16 autocast, and the reference leaves the GPU once its
  log-probs are computed (it comes back only for held-out evaluations);
- a tiny model on the CPU trains on one torch thread (``toyworld.runtime.tiny_model_threads``);
- a non-finite loss, or a non-finite gradient with a finite loss, stops training *before* the optimiser
  step with a :class:`TrainingDiverged` naming the step: the weights are those after the step before,
  and ``error.history`` holds the steps done; Ctrl-C (KeyboardInterrupt) returns the history so far,
  with ``history.interrupted = True``, and leaves the model usable.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..maths.checks import check_finite, check_int
from ..maths.logprobs import IGNORE_INDEX
from ..maths.losses import LossSpec, log_ratio_margin, loss_spec, reward_order_mask, rrhf_loss_terms, rrhf_scores
from ..maths.metrics import preference_metrics
from ..toyworld.batching import encode_prompt_response
from ..toyworld.runtime import tiny_model_threads
from .device import resolve_device
from .scoring import autocast_for, check_fits, response_logps

#: ``evaluate(policy, step, steps) -> dict | None``: called before the first step (step 0) and after every step;
#: a dict is stored in ``history.evals`` with its step, None skips that step.
Evaluate = Callable[[torch.nn.Module, int, int], "dict | None"]
FIXED_WIDTH_UP_TO = 64  # tokens: pad every preference batch to the data set's longest pair up to this


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How a trainer runs; every trainer takes these as keywords (``steps=300, lr=1e-3, ...``).

    ``device`` None means :func:`course_lib.loop.device.default_device`; ``tokenizer`` None means the toy
    tokenizer; ``evaluate`` is the held-out callback (:data:`Evaluate`); ``batch_size`` None means the
    trainer's own default (32 pairs or examples, 8 rankings).

    The optimiser is constant-rate Adam unless told otherwise: ``optimizer`` is a torch optimiser class (or a
    ``functools.partial`` of one) called as ``optimizer(params, lr=lr)``; ``lr_schedule(step, steps)``
    multiplies ``lr`` at 0-based ``step``; ``max_grad_norm`` clips the gradients' global norm. The data build
    trains its reference model this way (AdamW, warm-up and cosine decay, clipping at 1).
    """

    steps: int = 200
    batch_size: int | None = None
    lr: float = 1e-3
    seed: int = 0
    device: str | torch.device | None = None
    tokenizer: object = None
    evaluate: Evaluate | None = None
    progress: bool = True
    optimizer: Callable | None = None
    lr_schedule: Callable[[int, int], float] | None = None
    max_grad_norm: float | None = None


def _settings(trainer: str, given: dict, batch_size: int) -> TrainSettings:
    """Checked settings: unknown keywords, counts, lr and the device named as the caller wrote them."""
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(TrainSettings)})
    if unknown:
        raise TypeError(f"{trainer}() got an unexpected keyword argument {unknown[0]!r}")
    settings = TrainSettings(**{"batch_size": batch_size, **given})
    check_int("batch_size", settings.batch_size, minimum=1)
    check_int("steps", settings.steps, minimum=1)
    check_finite("lr", settings.lr, minimum=0.0)
    device = resolve_device(settings.device, name="device")
    tokenizer = settings.tokenizer
    if tokenizer is None:
        from ..toyworld.models import load_model_and_tokenizer

        tokenizer = load_model_and_tokenizer()[1]
    return dataclasses.replace(settings, device=device, tokenizer=tokenizer)


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


def _check_loss(loss: torch.Tensor, step: int, desc: str, history: History) -> None:
    """The loss can be trained on and is finite; else the step is refused before any update."""
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


def _check_gradients(named_params, loss: torch.Tensor, step: int, desc: str, history: History) -> None:
    """Every gradient is finite (one device sync); else TrainingDiverged naming the parameters."""
    with_grad = [(name, p.grad) for name, p in named_params if p.grad is not None]
    if not with_grad:
        return
    finite = torch.stack([torch.isfinite(g).all().to(with_grad[0][1].device) for _, g in with_grad])
    if bool(finite.all()):
        return
    bad = [name for (name, _), ok in zip(with_grad, finite.tolist()) if not ok]
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise TrainingDiverged(
        f"{desc}: the gradient became non-finite at step {step} (in {shown}) while the loss was "
        f"{loss.item():.6g}; training stopped before that step's update, so the weights are those "
        f"after step {step - 1}. Check the loss function for sqrt(0), log(0) or division by zero.",
        step=step,
        history=history,
    )


def _evaluate(evaluate: Evaluate | None, policy, step: int, steps: int, history: History) -> None:
    """Call the ``evaluate`` callback and keep what it returns (None: nothing at this step)."""
    if evaluate is not None:
        metrics = evaluate(policy, step, steps)
        if metrics is not None:
            history.evals.append({"step": step, **metrics})


def _optimizer(policy: torch.nn.Module, settings: TrainSettings):
    """(named trainable parameters, their optimiser); the policy goes to the device, in eval mode."""
    named_params = [(name, p) for name, p in policy.named_parameters() if p.requires_grad]
    if not named_params:
        raise ValueError(
            "policy has no trainable parameters (requires_grad is False everywhere): "
            "call policy.requires_grad_(True), or pass a copy of the model that is not frozen"
        )
    policy.to(settings.device)
    policy.eval()  # no dropout; gradients still flow
    params = [p for _, p in named_params]
    if settings.optimizer is not None:
        return named_params, settings.optimizer(params, lr=settings.lr)
    # fused Adam updates all parameters in one kernel (about 4x faster on CPU for the toy model)
    fused = settings.device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    return named_params, torch.optim.Adam(params, lr=settings.lr, fused=fused)


def _step(optimizer, named_params, settings: TrainSettings, step: int) -> None:
    """One update: gradients clipped and lr scheduled when the settings ask for it."""
    if settings.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_([p for _, p in named_params], settings.max_grad_norm)
    if settings.lr_schedule is not None:
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * settings.lr_schedule(step - 1, settings.steps)
    optimizer.step()


def _run(policy, settings: TrainSettings, desc: str, step_fn) -> History:
    """The loop shared by every trainer: optimiser, progress bar, finite checks, interrupts, evaluation."""
    named_params, optimizer = _optimizer(policy, settings)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    history = History()
    history.steps, history.seed = settings.steps, settings.seed  # what produced the run (the trainer adds the loss)
    _evaluate(settings.evaluate, policy, 0, settings.steps, history)
    bar = tqdm(range(1, settings.steps + 1), desc=desc, disable=not settings.progress, leave=False)
    try:
        for step in bar:
            loss, record = step_fn(generator)
            _check_loss(loss, step, desc, history)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _check_gradients(named_params, loss, step, desc, history)
            _step(optimizer, named_params, settings, step)
            history.append({"step": step, "loss": loss.item(), **record})
            if settings.progress:
                bar.set_postfix(loss=f"{loss.item():.3g}", refresh=False)
            _evaluate(settings.evaluate, policy, step, settings.steps, history)
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
        optimizer.zero_grad(set_to_none=True)  # a gradient left by a refused step
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


def _batch_indices(generator: torch.Generator, n: int, batch_size: int) -> torch.Tensor:
    """``batch_size`` indices drawn without replacement from range(n) (with replacement if n is smaller)."""
    if batch_size <= n:
        return torch.randperm(n, generator=generator)[:batch_size]
    return torch.randint(n, (batch_size,), generator=generator)


def _pad_to(tensor: torch.Tensor, width: int, key: str, tokenizer) -> torch.Tensor:
    """Right-pad an encoded (N, T) tensor to (N, width) with the value padding uses for ``key``."""
    fill = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}[key]
    pad = torch.full((tensor.shape[0], width - tensor.shape[1]), fill, dtype=tensor.dtype)
    return torch.cat([tensor, pad], dim=1)


def _encode_pairs(policy, pairs: list[dict], tokenizer) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, (2N, T), each fitting the policy's context.

    Short data (the toy world): every forward pass has the same width, so at step 1 the policy's
    log-probs equal the precomputed reference's bit for bit. Long data (real models): each batch is
    trimmed to its longest row, for memory; h at step 1 is then 0 only up to float round-off.
    """
    prompts = [p["prompt"] for p in pairs]
    chosen = encode_prompt_response(tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected = encode_prompt_response(tokenizer, prompts, [p["rejected"] for p in pairs])
    check_fits(policy, chosen, lambda row: f"pairs[{row}] (prompt + chosen)")
    check_fits(policy, rejected, lambda row: f"pairs[{row}] (prompt + rejected)")
    width = max(chosen["input_ids"].shape[1], rejected["input_ids"].shape[1])
    return {
        k: torch.cat([_pad_to(chosen[k], width, k, tokenizer), _pad_to(rejected[k], width, k, tokenizer)])
        for k in chosen
    }


@torch.no_grad()
def _reference_logps(reference, rows: dict[str, torch.Tensor], settings: TrainSettings, trim: bool) -> torch.Tensor:
    """The reference's summed log-probs of every row, (2N,) on CPU, computed once; on CUDA the reference
    then goes back to the CPU (training needs only its log-probs)."""
    reference.to(settings.device).eval()
    n_rows = rows["input_ids"].shape[0]
    logps = torch.cat(
        [
            response_logps(reference, {k: v[chunk] for k, v in rows.items()}, trim=trim)[0].cpu()
            for chunk in torch.arange(n_rows).split(2 * settings.batch_size)
        ]
    )
    if settings.device.type == "cuda":
        reference.to("cpu")
        torch.cuda.empty_cache()
    return logps


def _preference_step(policy, rows, ref_logps, spec: LossSpec, beta: float, average: bool, batch_size: int, trim):
    """One step's (mean loss, record) of a pairwise loss on ``batch_size`` pairs drawn from ``rows``."""
    n = rows["input_ids"].shape[0] // 2

    def step_fn(generator):
        idx = _batch_indices(generator, n, batch_size)
        b = len(idx)
        logps, lengths = response_logps(policy, {k: v[torch.cat([idx, idx + n])] for k, v in rows.items()}, trim=trim)
        refs = ref_logps[torch.cat([idx, idx + n])].to(logps.device) if ref_logps is not None else None
        summed = (logps[:b], logps[b:], *((refs[:b], refs[b:]) if refs is not None else (None, None)))  # (b,) each
        seen = summed
        if average:  # each log-prob divided by its response's length
            divide = (lengths[:b].to(logps.dtype), lengths[b:].to(logps.dtype)) * 2
            seen = tuple(x / length if x is not None else None for x, length in zip(summed, divide))
        per_pair = spec.fn(*seen, beta=beta)
        if not isinstance(per_pair, torch.Tensor):
            raise TypeError(f"the loss function must return a torch.Tensor, got {type(per_pair).__name__}")
        with torch.no_grad():  # a reference-free loss: its rewards and margin are the policy's own (ref = 0)
            zeros = torch.zeros_like(logps[:b])
            record = {
                "margin": log_ratio_margin(*[x if x is not None else zeros for x in seen]).mean().item(),
                **preference_metrics(*[x if x is not None else zeros for x in summed], beta=beta),
            }
        return per_pair.mean(), record

    return step_fn


def train_preference(
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    pairs: list[dict],
    *,
    loss: str | Callable | LossSpec = "dpo",
    beta: float = 0.1,
    length_normalize: bool | None = None,
    loss_kwargs: dict | None = None,
    **settings,
) -> History:
    """Train ``policy`` in place on preference pairs with a pairwise loss; the reference stays frozen.

    Each step draws ``batch_size`` pairs, computes the policy's log-probs of chosen and rejected in
    one forward pass, and minimises ``loss(pc, pr, rc, rr, beta=beta, **loss_kwargs).mean()``.

    Log-probs fed to the loss are summed over response tokens, or averaged when ``length_normalize``;
    None means what the loss's :class:`~course_lib.maths.losses.LossSpec` says (``average_logps``; a
    callable gets False). A loss with ``needs_reference=False`` gets None for the reference tensors and
    the reference is never run (``reference`` may then be None). The history's TRL metrics (``rewards/*``,
    ``logps/*``) always use summed log-probs, as TRL logs them; ``margin`` is the mean h *as the loss
    sees it* (averaged log-probs when length-normalised).

    Args:
        policy, reference: causal LMs with the same tokenizer (the policy usually starts as a copy).
        pairs: dicts with "prompt", "chosen", "rejected" strings.
        loss: a name in ``PAIRWISE_LOSSES``, a ``LossSpec``, or a callable with the library losses' signature.
        loss_kwargs: extra keywords for the loss, e.g. ``{"label_smoothing": 0.1}`` for cDPO.
        settings: :class:`TrainSettings` keywords: ``steps`` (200), ``batch_size`` (32), ``lr`` (1e-3),
            ``seed`` (0), ``device``, ``tokenizer``, ``progress`` (True) and ``evaluate``, a callback
            ``evaluate(policy, step, steps)`` called at step 0 and after every step (build it with
            :func:`course_lib.loop.evaluation.make_evaluator`); what it returns goes into ``history.evals``.

    Returns:
        :class:`History`, one dict per step: step, loss, margin, and TRL's rewards/* and logps/* keys.
    """
    spec = loss_spec(loss)
    if loss_kwargs:
        spec = dataclasses.replace(spec, fn=functools.partial(spec.fn, **loss_kwargs))
    average = spec.average_logps if length_normalize is None else bool(length_normalize)
    if spec.needs_reference and reference is None:
        raise ValueError(f"reference is None, but the loss {spec.name!r} needs a reference model")
    _check_records(pairs, "pairs", ("prompt", "chosen", "rejected"))
    run = _settings("train_preference", settings, batch_size=32)
    with tiny_model_threads(policy):
        rows = _encode_pairs(policy, pairs, run.tokenizer)
        trim = rows["input_ids"].shape[1] > FIXED_WIDTH_UP_TO
        ref_logps = _reference_logps(reference, rows, run, trim) if spec.needs_reference else None
        step_fn = _preference_step(policy, rows, ref_logps, spec, beta, average, run.batch_size, trim)
        history = _run(policy, run, f"{spec.name} (beta={beta})", step_fn)
    history.loss, history.beta, history.length_normalize = spec.name, beta, average
    return history


def _encode_rankings(policy, rankings: list[dict], tokenizer) -> tuple[dict, torch.Tensor]:
    """Every candidate as a row, (N*K, T), and the rewards, (N, K)."""
    k = len(rankings[0]["responses"])
    if any(len(r["responses"]) != k or len(r["rewards"]) != k for r in rankings):
        raise ValueError("every ranking must have the same number K of responses and rewards")
    prompts = [r["prompt"] for r in rankings for _ in range(k)]
    encoded = encode_prompt_response(tokenizer, prompts, [y for r in rankings for y in r["responses"]])
    check_fits(policy, encoded, lambda row: f"rankings[{row // k}] (prompt + responses[{row % k}])")
    return encoded, torch.tensor([r["rewards"] for r in rankings], dtype=torch.float32)


def _rrhf_record(candidate_logps, candidate_lengths, candidate_rewards, rank, sft, length_penalty) -> dict:
    """The per-step RRHF metrics: both terms, the candidates' log-probs and the ranking accuracy."""
    scores = rrhf_scores(candidate_logps, candidate_lengths, length_penalty=length_penalty)  # (b, K)
    ordered = reward_order_mask(candidate_rewards)  # (b, K, K): r_i < r_j
    agree = reward_order_mask(scores) & ordered  # ... and p_i < p_j
    return {
        "rank_loss": rank.mean().item(),
        "sft_loss": sft.mean().item(),
        "logps/candidates": candidate_logps.mean().item(),
        "logps/best": (-sft).mean().item(),
        "ranking_accuracy": (agree.sum() / ordered.sum().clamp(min=1)).item(),
    }


def train_rrhf(
    policy: torch.nn.Module,
    rankings: list[dict],
    *,
    length_penalty: float = 1.0,
    sft_weight: float = 1.0,
    rank_weight: float = 1.0,
    **settings,
) -> History:
    """Train ``policy`` in place with RRHF (Yuan et al. 2023, Eq. 5) on ranked candidate sets.

    Each step draws ``batch_size`` prompts (default 8), scores all their K candidates in one forward pass,
    and minimises ``rank_weight * L_rank + sft_weight * L_ft`` (mean over prompts; the paper's Eq. 5 has
    both weights 1). RRHF needs no reference model: only an ``evaluate`` callback holds one, for the
    held-out KL and preference accuracy.

    Args:
        rankings: dicts with "prompt", "responses" (K strings) and "rewards" (K floats).
        rank_weight: the weight of L_rank; 0 trains on the best candidate alone (fine-tuning on the
            best of K, the rejection-sampling fine-tuning that the RRHF paper compares with).
        settings: :class:`TrainSettings` keywords, as in :func:`train_preference`.

    Returns:
        :class:`History` with step, loss, rank_loss, sft_loss, ``logps/candidates`` (mean summed log-prob
        of all candidates), ``logps/best`` (of the best one), and ``ranking_accuracy`` (fraction of
        reward-ordered pairs whose scores are in the same order).
    """
    _check_records(rankings, "rankings", ("prompt", "responses", "rewards"))
    run = _settings("train_rrhf", settings, batch_size=8)
    rank_weight = check_finite("rank_weight", rank_weight, minimum=0.0)
    encoded, rewards = _encode_rankings(policy, rankings, run.tokenizer)
    k = rewards.shape[1]

    def step_fn(generator):
        idx = _batch_indices(generator, len(rankings), run.batch_size)  # (b,)
        rows = (idx.unsqueeze(1) * k + torch.arange(k)).flatten()  # (b*K,)
        logps, lengths = response_logps(policy, {key: v[rows] for key, v in encoded.items()})
        candidate_logps, candidate_lengths = logps.view(-1, k), lengths.view(-1, k)  # (b, K)
        candidate_rewards = rewards[idx].to(logps.device)
        rank, sft = rrhf_loss_terms(
            candidate_logps, candidate_lengths, candidate_rewards, length_penalty=length_penalty
        )
        with torch.no_grad():
            record = _rrhf_record(candidate_logps, candidate_lengths, candidate_rewards, rank, sft, length_penalty)
        return (rank_weight * rank + sft_weight * sft).mean(), record

    with tiny_model_threads(policy):
        history = _run(policy, run, "rrhf", step_fn)
    history.loss = "rrhf"
    return history


def train_sft(policy: torch.nn.Module, examples: list[dict], **settings) -> History:
    """Supervised fine-tuning: minimise the mean per-token negative log-likelihood of the responses.

    Each step draws ``batch_size`` examples with replacement and takes the cross-entropy over all their
    response tokens (and <eos>). The data build trains its reference model with it.

    Args:
        examples: dicts with a "prompt" string and a "completion" string (TRL's prompt-completion form,
            what :func:`course_lib.toyworld.data.load_sft_corpus` returns) or a "response" string; the
            prompt is not scored.
        settings: :class:`TrainSettings` keywords, as in :func:`train_preference`.

    Returns:
        :class:`History` with step and loss (nats per response token).
    """
    _check_records(examples, "examples", ("prompt",))
    run = _settings("train_sft", settings, batch_size=32)
    for i, e in enumerate(examples):
        if "completion" not in e and "response" not in e:
            raise ValueError(f"examples[{i}] has neither 'completion' nor 'response' (it has {sorted(e)})")
    responses = [e["completion"] if "completion" in e else e["response"] for e in examples]
    encoded = encode_prompt_response(run.tokenizer, [e["prompt"] for e in examples], responses)
    check_fits(policy, encoded, lambda row: f"examples[{row}] (prompt + completion)")

    trim = encoded["input_ids"].shape[1] > FIXED_WIDTH_UP_TO

    def step_fn(generator):
        idx = torch.randint(len(examples), (run.batch_size,), generator=generator)  # with replacement
        batch = {k: v[idx].to(run.device) for k, v in encoded.items()}
        width = int(batch["attention_mask"].sum(-1).max()) if trim else batch["input_ids"].shape[1]
        with autocast_for(run.device):
            logits = policy(input_ids=batch["input_ids"][:, :width], attention_mask=batch["attention_mask"][:, :width])
        # logits[:, t] predicts token t + 1; the labels are IGNORE_INDEX on the prompt and the padding
        labels = batch["labels"][:, 1:width].flatten()
        return torch.nn.functional.cross_entropy(logits.logits[:, :-1].flatten(0, 1).float(), labels), {}

    with tiny_model_threads(policy):
        history = _run(policy, run, "sft", step_fn)
    history.loss = "sft"
    return history
