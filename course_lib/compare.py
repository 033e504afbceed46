"""The headless comparison: ``python -m course_lib.compare``.

Trains DPO and IPO on the deterministic preference pairs and RRHF on the rankings, each from the
reference model, evaluates each on held-out data, prints a table, and writes ``results.json`` and PNG
plots into ``--out``. Times are kept out of ``results.json``, so two runs with the same seed give
identical files.

    python -m course_lib.compare --out results/
    python -m course_lib.compare --losses dpo ipo --beta 0.1 0.5 --steps 300 --out results/
    python -m course_lib.compare --model Qwen/Qwen2.5-0.5B-Instruct --dataset PATH_OR_HUB_NAME --losses dpo ipo
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from .loop.device import default_device
from .maths.losses import PAIRWISE_LOSSES

DEFAULT_LOSSES = ("dpo", "ipo", "rrhf")
DEFAULT_BETA = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course_lib.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSSES), choices=[*PAIRWISE_LOSSES, "rrhf"])
    parser.add_argument(
        "--beta", nargs="+", type=float, default=[DEFAULT_BETA], help="one or several betas (IPO's tau)"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: course_lib.default_device())")
    parser.add_argument(
        "--model", default=None, help="a local folder or hub name of a causal LM (default: data/reference_model)"
    )
    parser.add_argument(
        "--dataset", default=None, help="a folder with train.jsonl/test.jsonl in TRL's preference format, or a hub name"
    )
    parser.add_argument(
        "--labelling",
        default="deterministic",
        choices=["deterministic", "bradley_terry"],
        help="which labelling of the toy pairs",
    )
    parser.add_argument("--eval-samples", type=int, default=256, help="policy samples for the KL and reward")
    parser.add_argument("--max-train-pairs", type=int, default=None)
    parser.add_argument("--out", default=None, help="folder for results.json and the plots")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if any(b <= 0 for b in args.beta):
        parser.error(f"--beta must be > 0, got {args.beta}")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def load_pairs(dataset: str | None, labelling: str) -> tuple[list[dict], list[dict]]:
    """(train, test) preference pairs: the toy data by default, else a folder or hub dataset."""
    from .toyworld.data import load_preferences

    if dataset is None:
        return load_preferences("train", labelling=labelling), load_preferences("test", labelling=labelling)
    path = Path(dataset).expanduser()
    if path.is_dir() and (path / "train.jsonl").is_file():
        from datasets import load_dataset

        files = {"train": str(path / "train.jsonl")}
        if (path / "test.jsonl").is_file():
            files["test"] = str(path / "test.jsonl")
        loaded = load_dataset("json", data_files=files)
    else:
        from datasets import load_dataset

        loaded = load_dataset(dataset)  # a hub name: needs a network connection
    for split in loaded.values():
        missing = {"chosen", "rejected"} - set(split.column_names)
        if missing:
            raise ValueError(f"dataset {dataset!r} lacks the fields {sorted(missing)} of TRL's preference format")
    train = [standard_pair(dict(r)) for r in loaded["train"]]
    if "test" in loaded:
        return train, [standard_pair(dict(r)) for r in loaded["test"]]
    n_test = max(1, len(train) // 10)  # no test split: hold the last tenth out of training
    if len(train) < 2:
        raise ValueError(f"dataset {dataset!r} has {len(train)} pair(s) and no test split: nothing to hold out")
    return train[:-n_test], train[-n_test:]


def standard_pair(row: dict) -> dict:
    """Any of TRL's four preference forms -> ``{"prompt": str | messages, "chosen": str, "rejected": str}``.

    Standard or conversational (lists of messages), with an explicit ``prompt`` or an implicit one (the
    shared beginning of chosen and rejected, as TRL's ``extract_prompt`` finds it).
    """
    chosen, rejected = row["chosen"], row["rejected"]
    prompt = row.get("prompt")
    if prompt is None:  # implicit prompt: the longest shared beginning
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        if isinstance(chosen, str):  # cut at a word boundary, as TRL does for text
            shared = chosen.rfind(" ", 0, shared + 1) if shared < len(chosen) and chosen[shared] != " " else shared
            shared = max(shared, 0)
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    if isinstance(chosen, list):  # conversational: the assistant's reply is the response
        chosen, rejected = (" ".join(m["content"] for m in side) for side in (chosen, rejected))
    return {**row, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def unique_prompts(pairs: list[dict]) -> list:
    """The distinct prompts of some pairs (strings or conversations), in a stable order."""
    seen = {}
    for pair in pairs:
        seen.setdefault(json.dumps(pair["prompt"], sort_keys=True), pair["prompt"])
    return [seen[key] for key in sorted(seen)]


def run_comparison(args: argparse.Namespace) -> dict:
    """Train and evaluate every (loss, beta) run; return the ``results.json`` dictionary."""
    from .loop.evaluation import evaluate_policy, make_evaluator
    from .loop.training import default_length_normalize, train_preference, train_rrhf
    from .toyworld.models import load_model_and_tokenizer
    from .toyworld.sampling import sample_responses

    device = torch.device(args.device) if args.device else default_device()
    dtype = torch.bfloat16 if device.type == "cuda" and args.model is not None else None
    reference, tokenizer = load_model_and_tokenizer(args.model, device=device, dtype=dtype)
    train_pairs, test_pairs = load_pairs(args.dataset, args.labelling)
    if args.max_train_pairs:
        train_pairs = train_pairs[: args.max_train_pairs]
    test_prompts = unique_prompts(test_pairs)
    toy = args.model is None and args.dataset is None
    reward_fn = None if toy else False
    rankings = None
    if "rrhf" in args.losses:
        if args.dataset is None:
            from .toyworld.data import load_rankings

            rankings = load_rankings("train")
        else:
            print("rrhf skipped: it needs ranked candidate sets, which only the toy data provides", file=sys.stderr)

    runs = []
    for beta in args.beta:
        for loss in args.losses:
            if loss == "rrhf" and (rankings is None or beta != args.beta[0]):
                continue  # RRHF has no beta: run it once
            policy = copy.deepcopy(reference).float()  # fp32 master weights; bf16 autocast computes on CUDA
            policy.requires_grad_(True)
            common = dict(
                steps=args.steps,
                lr=args.lr,
                seed=args.seed,
                device=device,
                tokenizer=tokenizer,
                progress=not args.no_progress,
            )
            held_out = dict(
                pairs=test_pairs,
                prompts=test_prompts,
                every=max(1, args.steps // 5),
                n_samples=args.eval_samples,
                seed=args.seed,
                reward_fn=reward_fn,
            )
            if loss == "rrhf":
                batch_size = max(1, args.batch_size // 4)  # prompts per step, K candidates each
                rows = batch_size * len(rankings[0]["responses"])  # sequences per step
                evaluate = make_evaluator(reference, tokenizer, batch_size=rows // 2, **held_out)
                history = train_rrhf(policy, rankings, batch_size=batch_size, evaluate=evaluate, **common)
                length_normalize, run_beta = True, None
            else:
                length_normalize = default_length_normalize(loss)
                evaluate = make_evaluator(reference, tokenizer, batch_size=args.batch_size, **held_out)
                history = train_preference(
                    policy,
                    reference,
                    train_pairs,
                    loss=loss,
                    beta=beta,
                    batch_size=args.batch_size,
                    length_normalize=length_normalize,
                    evaluate=evaluate,
                    **common,
                )
                run_beta = beta
            if history.evals and history.evals[-1]["step"] == len(history):
                evaluation = dict(history.evals[-1])  # the held-out evaluation after the last step
            else:  # interrupted between evaluations
                evaluation = evaluate_policy(
                    policy,
                    reference,
                    tokenizer,
                    pairs=test_pairs,
                    prompts=test_prompts,
                    n_samples=args.eval_samples,
                    seed=args.seed,
                    reward_fn=reward_fn,
                    with_samples=False,
                )
            evaluation.pop("step", None)
            generator = torch.Generator().manual_seed(args.seed)
            shown = test_prompts[:4]  # (strings, or conversations for chat datasets)
            evaluation["samples"] = [
                {"prompt": p, "response": r}
                for p, r in zip(shown, sample_responses(policy, tokenizer, shown, generator=generator))
            ]
            runs.append(
                {
                    "loss": loss,
                    "beta": run_beta,
                    "length_normalize": length_normalize,
                    "steps": args.steps,
                    "seed": args.seed,
                    "interrupted": history.interrupted,
                    "history": list(history),
                    "evals": history.evals,
                    "eval": evaluation,
                }
            )
            del policy
    return {
        "model": args.model or "data/reference_model",
        "dataset": args.dataset or f"data/preferences ({args.labelling})",
        "runs": runs,
    }


def format_table(results: dict) -> str:
    """The comparison as a fixed-width text table."""
    head = f"{'loss':<6} {'beta':>5} {'final loss':>10} {'pref acc':>8} {'KL':>14} {'true reward':>14} {'margin':>8}"
    lines = [head, "-" * len(head)]
    for run in results["runs"]:
        e, last = run["eval"], run["history"][-1]
        beta = "-" if run["beta"] is None else f"{run['beta']:g}"
        acc = "-" if e["preference_accuracy"] is None else f"{e['preference_accuracy']:.3f}"
        kl = "-" if e["kl"] is None else f"{e['kl']:.3f}±{e['kl_stderr']:.3f}"
        reward = "-" if e["reward"] is None else f"{e['reward']:.3f}±{e['reward_stderr']:.3f}"
        margin = f"{last['margin']:.3f}" if "margin" in last else "-"
        lines.append(f"{run['loss']:<6} {beta:>5} {last['loss']:>10.4f} {acc:>8} {kl:>14} {reward:>14} {margin:>8}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run_comparison(args)
    print(format_table(results))
    if args.out:
        from .teaching.plots import plot_comparison

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        for name in plot_comparison(results, out):
            print(f"wrote {out / name}")
        print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
