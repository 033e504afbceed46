"""N preference runs in one: policies of one architecture trained on the same batches, one forward and one backward.

Each policy has its own pairwise loss and beta (a ``(loss, beta)`` config, as in :func:`train_sweep`); all see
the same batches (the same seed), and the reference's log-probs are computed once and shared. The N policies'
parameters are stacked, ``(N, *shape)`` each, and the model runs over them with ``torch.func.vmap`` of
``torch.func.functional_call``: every matmul becomes one batched matmul. Adam is elementwise, so one Adam over
the stacked tensors is N Adams. The result equals N sequential :func:`train_preference` runs up to float
round-off (``tests/test_batched.py`` states the tolerance).

- Attention runs in the model's "eager" implementation inside vmap: torch has no batching rule for the CPU
  flash-attention kernel behind "sdpa", and would loop over the N policies one by one.
- A policy whose loss or gradient becomes non-finite stops all of them, with :class:`TrainingDiverged` naming it.
- Evaluation is not batched: the ``evaluate`` callback gets each policy in turn, with its weights written back.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from ..maths.checks import check_finite
from ..maths.logprobs import IGNORE_INDEX, token_logps
from ..maths.losses import LossSpec, log_ratio_margin, loss_spec
from ..maths.metrics import preference_metrics
from ..toyworld.runtime import tiny_model_threads
from .scoring import autocast_for
from .training import (
    History,
    TrainingDiverged,
    TrainSettings,
    _batch_indices,
    _check_records,
    _encode_pairs,
    _settings,
)


def stacked_response_logps(model: torch.nn.Module, stacked: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
    """Summed response log-probs of one batch under N policies: ``(N, B)``.

    ``model`` gives the architecture (its own weights are not used); ``stacked`` maps each parameter name
    to the N policies' values, ``(N, *shape)``; ``batch`` holds ``input_ids``, ``attention_mask``, ``labels``,
    each (B, T), shared by all policies.
    """

    def logits(params):  # one policy's (B, T, V)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return functional_call(model, params, kwargs=inputs).logits

    with autocast_for(batch["input_ids"].device):
        all_logits = vmap(logits)(stacked)  # (N, B, T, V)
    n = all_logits.shape[0]
    labels = batch["labels"].repeat(n, 1)  # (N*B, T)
    return token_logps(all_logits.flatten(0, 1).float(), labels).sum(-1).view(n, -1)


def _write_back(stacked: dict[str, torch.Tensor], policies: list[torch.nn.Module]) -> None:
    """Copy policy i's slice of every stacked parameter into ``policies[i]``."""
    with torch.no_grad():
        for i, policy in enumerate(policies):
            for name, param in policy.named_parameters():
                param.copy_(stacked[name][i])


def _check_configs(policies, configs) -> list[tuple]:
    if not isinstance(policies, (list, tuple)) or not policies:
        raise ValueError("policies must be a non-empty list of models (copies of the reference, usually)")
    if not isinstance(configs, (list, tuple)) or len(configs) != len(policies):
        raise ValueError(f"configs must hold one (loss, beta) per policy ({len(policies)}), got {configs!r:.80}")
    return [(loss_spec(loss), check_finite(f"configs[{i}] beta", beta)) for i, (loss, beta) in enumerate(configs)]


def train_preference_batched(
    policies: list[torch.nn.Module],
    reference: torch.nn.Module | None,
    pairs: list[dict],
    configs: list[tuple[str | Callable | LossSpec, float]],
    **settings,
) -> list[History]:
    """Train ``policies[i]`` in place with ``configs[i] = (loss, beta)``, all on the same batches, in one pass.

    Equal to ``[train_preference(policy, reference, pairs, loss=loss, beta=beta, **settings) for ...]`` up to
    float round-off: the same batches (one seed), each loss on summed or averaged log-probs as its spec says
    (``average_logps``), and no reference pass when no loss needs one (``needs_reference``; ``reference`` may
    then be None).

    Args:
        policies: N models of one architecture (usually copies of ``reference``), trained in place.
        reference: the frozen reference; its log-probs are computed once and shared.
        pairs: dicts with "prompt", "chosen", "rejected" strings.
        configs: N ``(loss, beta)``: a name in ``PAIRWISE_LOSSES``, a ``LossSpec`` or a callable.
        settings: :class:`~course_lib.loop.training.TrainSettings` keywords, as for ``train_preference``
            (``steps``, ``batch_size`` (32), ``lr``, ``seed``, ``device``, ``tokenizer``, ``progress``);
            ``evaluate(policy, step, steps)`` is called for each policy in turn, with its weights written back.

    Returns:
        N :class:`History`, one per policy, as :func:`train_preference` returns them.
    """
    specs = _check_configs(policies, configs)
    if reference is None and any(spec.needs_reference for spec, _ in specs):
        raise ValueError("reference is None, but a loss in configs needs a reference model")
    _check_records(pairs, "pairs", ("prompt", "chosen", "rejected"))
    run = _settings("train_preference_batched", settings, batch_size=32)
    with tiny_model_threads(policies[0]):
        rows = _encode_pairs(policies[0], pairs, run.tokenizer)  # (2n, T): chosen rows, then rejected rows
        skeleton = copy.deepcopy(policies[0]).to(run.device)  # the architecture, with attention vmap can batch
        skeleton.set_attn_implementation("eager")
        needed = any(spec.needs_reference for spec, _ in specs)
        ref_logps = _reference_logps(skeleton, reference, rows, run) if needed else None  # (2n,) or None
        return _train(policies, specs, rows, ref_logps, skeleton, run)


@torch.no_grad()
def _reference_logps(skeleton, reference, rows: dict[str, torch.Tensor], run: TrainSettings) -> torch.Tensor:
    """The reference's summed log-probs of every row, (2n,), by the policies' own vmapped path: a policy
    equal to the reference gets the same numbers bit for bit, so h = 0 at step 1 as in ``train_preference``."""
    weights = {name: p.detach().to(run.device)[None] for name, p in reference.named_parameters()}  # (1, *shape)
    chunks = torch.arange(rows["input_ids"].shape[0]).split(2 * run.batch_size)
    batches = ({k: v[chunk].to(run.device) for k, v in rows.items()} for chunk in chunks)
    return torch.cat([stacked_response_logps(skeleton, weights, batch)[0] for batch in batches])


def _train(policies, specs, rows, ref_logps, skeleton, run: TrainSettings) -> list[History]:
    """The loop of :func:`train_preference_batched` on encoded ``rows`` and the reference's (2n,) log-probs."""
    n_pairs, n_policies, device = rows["input_ids"].shape[0] // 2, len(policies), run.device
    lengths = (rows["labels"][:, 1:] != IGNORE_INDEX).sum(-1)  # (2n,) response tokens
    for policy in policies:
        policy.to(device).eval()
    each = [dict(policy.named_parameters()) for policy in policies]
    stacked = {  # (N, *shape) leaves, one per parameter
        name: torch.stack([params[name].detach() for params in each]).requires_grad_(True) for name in each[0]
    }
    optimizer = torch.optim.Adam(stacked.values(), lr=run.lr, fused=device.type in ("cpu", "cuda"))
    torch.manual_seed(run.seed)
    generator = torch.Generator().manual_seed(run.seed)
    histories = [History() for _ in policies]
    for history, (spec, beta) in zip(histories, specs):
        history.loss, history.beta, history.length_normalize = spec.name, beta, spec.average_logps
        history.steps, history.seed = run.steps, run.seed

    def evaluate_all(step):
        if run.evaluate is not None:
            _write_back(stacked, policies)
            for policy, history in zip(policies, histories):
                metrics = run.evaluate(policy, step, run.steps)
                if metrics is not None:
                    history.evals.append({"step": step, **metrics})

    evaluate_all(0)
    try:
        for step in tqdm(range(1, run.steps + 1), desc=f"{n_policies} policies", disable=not run.progress, leave=False):
            idx = _batch_indices(generator, n_pairs, run.batch_size)  # (b,)
            both = torch.cat([idx, idx + n_pairs])  # (2b,): chosen rows, then rejected rows
            logps = stacked_response_logps(skeleton, stacked, {k: v[both].to(device) for k, v in rows.items()})
            ref = ref_logps[both].to(device) if ref_logps is not None else None
            row_lengths = lengths[both].to(device=device, dtype=logps.dtype)  # (2b,)
            losses, records = zip(*(_policy_loss(logps[i], ref, row_lengths, *specs[i]) for i in range(n_policies)))
            losses = torch.stack(losses)  # (N,)
            bad = _first_nonfinite(losses, stacked)
            if bad is not None:
                raise TrainingDiverged(
                    f"policy {bad} ({specs[bad][0].name}, beta={specs[bad][1]}): the loss or its gradient became "
                    f"non-finite at step {step}; training stopped before that step's update",
                    step=step,
                    history=histories[bad],
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for history, loss, record in zip(histories, losses.tolist(), records):
                history.append({"step": step, "loss": loss, **record})
            evaluate_all(step)
    except KeyboardInterrupt:
        for history in histories:
            history.interrupted = True
    finally:
        _write_back(stacked, policies)
    return histories


def _policy_loss(logps, ref, row_lengths, spec, beta) -> tuple[torch.Tensor, dict]:
    """One policy's mean loss and history record from its (2b,) summed log-probs, chosen then rejected."""
    b = len(logps) // 2
    if not spec.needs_reference:  # the loss sees None; the record's rewards and margin are the policy's own
        ref = torch.zeros_like(logps)
    summed = (logps[:b], logps[b:], ref[:b], ref[b:])  # the losses' argument order, (b,) each
    seen = summed
    if spec.average_logps:  # each log-prob over its response's length
        chosen_lengths, rejected_lengths = row_lengths[:b], row_lengths[b:]
        seen = (summed[0] / chosen_lengths, summed[1] / rejected_lengths)
        seen += (summed[2] / chosen_lengths, summed[3] / rejected_lengths)
    refs = seen[2:] if spec.needs_reference else (None, None)
    per_pair = spec.fn(*seen[:2], *refs, beta=beta)  # (b,)
    with torch.no_grad():
        record = {"margin": log_ratio_margin(*seen).mean().item(), **preference_metrics(*summed, beta=beta)}
    return per_pair.mean(), record


def _first_nonfinite(losses: torch.Tensor, stacked: dict[str, torch.Tensor]) -> int | None:
    """Backpropagate the N losses; the index of the first policy whose loss or gradient is inf or NaN, or None."""
    finite = torch.isfinite(losses)  # (N,)
    if bool(finite.all()):
        losses.sum().backward()  # policy i's parameters reach only loss i: the gradients are the N runs' own
        for grad in (p.grad for p in stacked.values()):
            finite &= torch.isfinite(grad.flatten(1)).all(1)
    return None if bool(finite.all()) else int((~finite).nonzero()[0])
