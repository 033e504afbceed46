"""Time per step of ``course_lib.loop.training.train_preference``: against a bare forward+backward, and against TRL.

    python benchmarks/bench_training.py                       # batch 32, 30 timed steps, 1 thread
    python benchmarks/bench_training.py --steps 60 --rounds 3 --no-trl

All on the toy world (``data/reference_model``, the deterministic training pairs), on CPU, in one process,
so the ratios are what to compare across machines:

1. **Step overhead**: median time of one ``train_preference`` step (DPO, beta 0.5; the interval between
   consecutive calls of the loss, so it holds the whole step: batch selection, the one forward pass over
   chosen + rejected, the loss, backward, Adam, the history record) against a bare forward + backward of the
   same model over the same tokens (the same 2 x batch_size sequences, pre-selected, trimmed to the same
   width; loss = the mean cross-entropy of the response tokens). Target: ratio <= 1.2. The bare step plus
   an Adam update is shown for information.
2. **TRL**: median time of one ``trl.DPOTrainer`` step (TRL 1.16, ``loss_type="sigmoid"``, fp32, no gradient
   checkpointing, the same model, data, batch size, beta and learning rate), measured between consecutive
   ``on_step_end`` callbacks, against ours. Target: ours faster (ratio < 1). TRL scores the reference model
   on every step by default; ``precompute_ref_log_probs=True`` (scored once, as we do) is timed too.
   Before timing, both must agree: (a) TRL's tokenization (it joins ``prompt + chosen`` as strings and appends
   ``<eos>``) gives our token ids, and (b) on ONE batch (the first ``batch_size`` pairs: the whole training
   set, so order does not matter) with a policy perturbed away from the reference (so h != 0) and lr 0,
   TRL's first logged loss equals ours.

Each step is timed twice: in CPU time of this process (``time.process_time``; with one torch thread and
no data-loader workers it is the work done, and it barely moves when other programs load the machine) and
in wall-clock time. The ratios use CPU time; wall-clock ratios are shown beside them. Rounds alternate
ours / bare / TRL so that all share the machine's load; each time is the median over all timed steps of
all rounds. Timings live here, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.loop.training import _batch_indices, _pad_to, train_preference  # noqa: E402
from course_lib.maths.losses import dpo_loss  # noqa: E402
from course_lib.toyworld.batching import encode_prompt_response  # noqa: E402
from course_lib.toyworld.data import load_preferences  # noqa: E402
from course_lib.toyworld.models import load_model_and_tokenizer  # noqa: E402

TARGET_OVERHEAD = 1.2


def trainable_copy(model):
    policy = copy.deepcopy(model)
    policy.requires_grad_(True)
    return policy


def perturbed_copy(model, scale=0.05, seed=1):
    """A copy with seeded Gaussian noise on every weight, so its log-probs differ from the reference's."""
    policy = trainable_copy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return policy


def now() -> tuple[float, float]:
    """(wall-clock, CPU time of this process) in seconds."""
    return time.perf_counter(), time.process_time()


def step_intervals(stamps: list[tuple[float, float]], warmup: int) -> list[tuple[float, float]]:
    """(wall, CPU) durations between consecutive stamps, dropping the first ``warmup`` of them."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])][warmup:]


# ----------------------------------------------------------------------------- ours
def time_ours(reference, tokenizer, pairs, args) -> list[tuple[float, float]]:
    stamps = []

    def timed_dpo(pc, pr, rc, rr, *, beta):
        stamps.append(now())
        return dpo_loss(pc, pr, rc, rr, beta=beta)

    history = train_preference(
        trainable_copy(reference),
        reference,
        pairs,
        loss=timed_dpo,
        beta=args.beta,
        steps=args.warmup + args.steps + 1,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=0,
        device="cpu",
        tokenizer=tokenizer,
        progress=False,
    )
    assert len(history) == args.warmup + args.steps + 1
    return step_intervals(stamps, args.warmup)


# ----------------------------------------------------------------------------- bare forward + backward
def training_batches(tokenizer, pairs, args) -> list[dict]:
    """The batches train_preference draws (same generator, same rows, trimmed to the same width)."""
    n = len(pairs)
    prompts = [p["prompt"] for p in pairs]
    chosen = encode_prompt_response(tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected = encode_prompt_response(tokenizer, prompts, [p["rejected"] for p in pairs])
    width = max(chosen["input_ids"].shape[1], rejected["input_ids"].shape[1])
    both = {
        k: torch.cat([_pad_to(chosen[k], width, k, tokenizer), _pad_to(rejected[k], width, k, tokenizer)])
        for k in chosen
    }
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.warmup + args.steps):
        idx = _batch_indices(generator, n, args.batch_size)
        rows = torch.cat([idx, idx + n])
        batch = {k: v[rows] for k, v in both.items()}
        used = int(batch["attention_mask"].sum(-1).max())
        batches.append({k: v[:, :used] for k, v in batch.items()})
    return batches


def time_bare(reference, batches, args, *, with_adam: bool) -> list[tuple[float, float]]:
    model = trainable_copy(reference)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr) if with_adam else None
    times = []
    for batch in batches:
        start = now()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (2b, T, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())  # response tokens only
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)
        end = now()
        times.append((end[0] - start[0], end[1] - start[1]))
    return times[args.warmup :]


# ----------------------------------------------------------------------------- TRL
def trl_trainer(policy, reference, tokenizer, pairs, args, *, steps, lr, precompute=False, callbacks=()):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench_trl_"),
        per_device_train_batch_size=args.batch_size,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        beta=args.beta,
        loss_type="sigmoid",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        precompute_ref_log_probs=precompute,
        dataloader_num_workers=0,
        seed=0,
    )
    dataset = Dataset.from_list(
        [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    )
    with contextlib.redirect_stderr(io.StringIO()):  # TRL's progress bars (e.g. precomputing the reference's log-probs)
        return DPOTrainer(
            model=policy,
            ref_model=reference,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=list(callbacks),
        )


def quiet_train(trainer) -> None:
    """trainer.train() without the Trainer's printed log dicts (printed when tqdm is disabled) or TRL's
    reference-precomputation progress bar (printed whatever disable_tqdm says)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.train()


def check_trl_tokenization(trainer, tokenizer, pairs) -> int:
    """TRL's prompt / chosen / rejected ids against ours; returns the number of pairs checked (raises on a mismatch)."""
    rows = trainer.train_dataset
    for i, p in enumerate(pairs):
        ours = encode_prompt_response(tokenizer, [p["prompt"]] * 2, [p["chosen"], p["rejected"]])
        for j, key in enumerate(("chosen_ids", "rejected_ids")):
            mask = ours["attention_mask"][j].bool()
            ids, labels = ours["input_ids"][j][mask].tolist(), ours["labels"][j][mask]
            prompt_len = int((labels == -100).sum())
            if rows[i]["prompt_ids"] != ids[:prompt_len] or rows[i][key] != ids[prompt_len:]:
                raise AssertionError(
                    f"pair {i}: TRL tokenizes differently: {rows[i]['prompt_ids']} + {rows[i][key]} vs {ids}"
                )
    return len(pairs)


def first_batch_losses(reference, tokenizer, pairs, args) -> tuple[float, float, int]:
    """(ours, TRL's) loss on one batch of ``batch_size`` pairs with a perturbed policy and lr 0."""
    batch_pairs = pairs[: args.batch_size]
    ours = train_preference(
        perturbed_copy(reference),
        reference,
        batch_pairs,
        loss="dpo",
        beta=args.beta,
        steps=1,
        batch_size=args.batch_size,
        lr=0.0,
        seed=0,
        device="cpu",
        tokenizer=tokenizer,
        progress=False,
    )[0]["loss"]
    trainer = trl_trainer(
        perturbed_copy(reference), copy.deepcopy(reference), tokenizer, batch_pairs, args, steps=1, lr=0.0
    )
    checked = check_trl_tokenization(trainer, tokenizer, batch_pairs)
    quiet_train(trainer)
    trl = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    return ours, trl, checked


def time_trl(reference, tokenizer, pairs, args, *, precompute: bool) -> list[tuple[float, float]]:
    from transformers import TrainerCallback

    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(now())

    trainer = trl_trainer(
        trainable_copy(reference),
        copy.deepcopy(reference),
        tokenizer,
        pairs,
        args,
        steps=args.warmup + args.steps + 1,
        lr=args.lr,
        precompute=precompute,
        callbacks=[Stamp()],
    )
    quiet_train(trainer)
    return step_intervals(stamps, args.warmup)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step (2x sequences per forward)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for every contestant (tiny models: 1 is fastest)"
    )
    parser.add_argument("--no-trl", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    if not args.no_trl:
        import datasets

        datasets.disable_progress_bars()

    reference, tokenizer = load_model_and_tokenizer()
    pairs = load_preferences("train")
    print(
        f"toy world: {sum(p.numel() for p in reference.parameters())} parameters, {len(pairs)} pairs, "
        f"batch {args.batch_size} pairs ({2 * args.batch_size} sequences), torch {torch.__version__}, "
        f"{args.threads} thread(s)"
    )

    if not args.no_trl:
        import trl

        ours_loss, trl_loss, checked = first_batch_losses(reference, tokenizer, pairs, args)
        print(f"\nTRL {trl.__version__}: tokenization identical to ours on {checked} pairs")
        print(
            f"first-batch DPO loss (perturbed policy, lr 0): ours {ours_loss:.6f}   TRL {trl_loss:.6f}   "
            f"|diff| {abs(ours_loss - trl_loss):.1e}"
        )
        if abs(ours_loss - trl_loss) > 1e-4 * max(1.0, abs(trl_loss)):
            raise SystemExit("the first-batch losses differ: the comparison would not be like for like")

    batches = training_batches(tokenizer, pairs, args)
    times = {"ours": [], "bare": [], "bare_adam": [], "trl": [], "trl_precomputed": []}
    for r in range(args.rounds):
        times["ours"] += time_ours(reference, tokenizer, pairs, args)
        times["bare"] += time_bare(reference, batches, args, with_adam=False)
        times["bare_adam"] += time_bare(reference, batches, args, with_adam=True)
        if not args.no_trl:
            times["trl"] += time_trl(reference, tokenizer, pairs, args, precompute=False)
            times["trl_precomputed"] += time_trl(reference, tokenizer, pairs, args, precompute=True)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(
        f"\ntime per step over {args.rounds} x {args.steps} steps, ms: "
        "median CPU time of this process (median wall-clock)"
    )
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items() if v}
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items() if v}
    labels = {
        "ours": "train_preference (DPO)",
        "bare": "bare forward + backward",
        "bare_adam": "bare forward + backward + Adam",
        "trl": "TRL DPOTrainer",
        "trl_precomputed": "TRL, precompute_ref_log_probs",
    }
    for key, label in labels.items():
        if key in cpu:
            print(f"  {label:<32}{1e3 * cpu[key]:8.2f}  ({1e3 * wall[key]:.2f})")
    ratio = cpu["ours"] / cpu["bare"]
    print(
        f"(1) step overhead: ours / bare forward+backward = {ratio:.2f} CPU ({wall['ours'] / wall['bare']:.2f} wall); "
        f"target <= {TARGET_OVERHEAD}: {'met' if ratio <= TARGET_OVERHEAD else 'NOT met'}. "
        f"ours / (bare + Adam) = {cpu['ours'] / cpu['bare_adam']:.2f} CPU"
    )
    if not args.no_trl:
        vs_trl = cpu["ours"] / cpu["trl"]
        print(
            f"(2) TRL: ours / TRL = {vs_trl:.2f} CPU ({wall['ours'] / wall['trl']:.2f} wall); target < 1: "
            f"{'met' if vs_trl < 1 else 'NOT met'}. ours / TRL with precomputed reference = "
            f"{cpu['ours'] / cpu['trl_precomputed']:.2f} CPU ({wall['ours'] / wall['trl_precomputed']:.2f} wall)"
        )


if __name__ == "__main__":
    main()
