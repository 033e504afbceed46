"""The headless comparison: ``python -m course_lib.compare``.

Trains DPO and IPO on the deterministic preference pairs and RRHF on the rankings, each from the
reference model, evaluates each on held-out data, prints a table, and writes ``results.json`` and PNG
plots into ``--out``. Times are kept out of ``results.json``, so two runs with the same seed give
identical files.

    python -m course_lib.compare --out results/
    python -m course_lib.compare --losses dpo ipo --beta 0.1 0.5 --steps 300 --out results/
    python -m course_lib.compare --model Qwen/Qwen2.5-0.5B-Instruct --dataset PATH_OR_HUB_NAME --losses dpo ipo

Only this module parses options: :func:`parse_args` turns them into a :class:`CompareConfig`, which
:func:`run_comparison` takes. A method is a pairwise loss of ``PAIRWISE_LOSSES`` (trained by
``train_preference``) or an entry of :data:`RANKING_METHODS` (RRHF, trained by ``train_rrhf``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from .loop import evaluation, training
from .loop.device import resolve_device
from .loop.scoring import context_limit
from .maths.losses import PAIRWISE_LOSSES, loss_spec
from .toyworld import models, sampling
from .toyworld.data import load_pairs, load_rankings, local_path_or_hub_id, write_atomically
from .toyworld.ipo_optimum_pairs import ipo_optimal_margins
from .toyworld.runtime import tiny_model_threads
from .toyworld.task import true_rewards

DEFAULT_LOSSES = ("dpo", "ipo", "rrhf")
DEFAULT_BETA = 0.5
PROG = "python -m course_lib.compare"
#: An evaluation with nothing measured (a run stopped before its first held-out evaluation).
NO_EVAL = dict.fromkeys(evaluation.EVAL_KEYS)


class UsageError(ValueError):
    """A bad option or a bad input file, found before or while loading: one line, exit status 2."""


class ResultsNotWritten(OSError):
    """``results.json`` could not be written (a full disk, a lost mount); the previous file is unchanged."""


@dataclasses.dataclass
class CompareConfig:
    """What to compare and how: one field per option (``device``, ``model_location`` and
    ``dataset_location`` already resolved: a ``Path`` for a local folder, a hub id otherwise)."""

    losses: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_LOSSES))
    beta: list[float] = dataclasses.field(default_factory=lambda: [DEFAULT_BETA])
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    device: torch.device | None = None
    model: str | None = None
    dataset: str | None = None
    labelling: str = "deterministic"
    eval_samples: int = 256
    max_train_pairs: int | None = None
    out: str | None = None
    progress: bool = True
    model_location: Path | str | None = None
    dataset_location: Path | str | None = None


class _Parser(argparse.ArgumentParser):
    """argparse, with its error on one line (no usage block): ``PROG: error: --option: what is wrong``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: type, minimum: float, text: str):
    """``kind(text)``, finite and >= ``minimum`` (> 0 for floats); argparse's error otherwise."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if kind is float and not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    if kind is int and not minimum <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
    return value


_positive_float = functools.partial(_number, float, 0)
_positive_int = functools.partial(_number, int, 1)
_seed = functools.partial(_number, int, 0)


def check_out(out: str) -> Path:
    """``--out`` must be a folder we can write into (created if missing); checked before any work."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {out!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"--out {out!r} cannot be written to ({err.strerror or err})") from None
    if (folder / "results.json").is_dir():
        raise ValueError(f"--out {out!r} holds a folder named results.json")
    return folder


def local_folder_or_hub_id(given: str | None, option: str, needs: str, hint: str) -> Path | str | None:
    """Where ``--model`` or ``--dataset`` points, resolved once: a local folder holding ``needs``
    (``config.json``, ``train.jsonl``), or a hub id. A path that looks local is never sent to the hub."""
    if given is None:
        return None
    where = local_path_or_hub_id(given, option)  # FileNotFoundError naming the option for a missing local path
    here = [p.name for p in Path.cwd().iterdir() if p.is_dir()] if isinstance(where, str) and "/" not in where else []
    close = difflib.get_close_matches(given, here, n=1, cutoff=0.75)  # a typo of a folder here, not a hub name
    if close:
        raise FileNotFoundError(
            f"{option} {given!r}: no such folder ({Path(given).absolute()} does not exist; did you mean {close[0]!r}?)"
        )
    if isinstance(where, Path):
        if not where.is_dir():
            raise ValueError(f"{option} {given!r} is a file, not a folder")
        if not (where / needs).is_file():
            found = sorted(p.name for p in where.iterdir())[:8]
            raise ValueError(
                f"{option} {given!r} has no {needs}" + (f" (it holds {found}{hint})" if found else " (it is empty)")
            )
    return where


def _parser() -> _Parser:
    """The options; their defaults are :class:`CompareConfig`'s."""
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    options = {
        "--losses": dict(nargs="+", choices=[*PAIRWISE_LOSSES, *RANKING_METHODS]),
        "--beta": dict(nargs="+", type=_positive_float, help="one or several betas (IPO's tau)"),
        "--steps": dict(type=_positive_int),
        "--batch-size": dict(type=_positive_int),
        "--lr": dict(type=_positive_float),
        "--seed": dict(type=_seed),
        "--device": dict(help="cuda, mps or cpu (default: course_lib.default_device())"),
        "--model": dict(help="a local folder or hub name of a causal LM (default: data/reference_model)"),
        "--dataset": dict(help="a folder with train.jsonl/test.jsonl in TRL's preference format, or a hub name"),
        "--labelling": dict(choices=["deterministic", "bradley_terry"], help="which labelling of the toy pairs"),
        "--eval-samples": dict(type=_positive_int, help="policy samples for the KL and reward"),
        "--max-train-pairs": dict(type=_positive_int, help="train on the first N pairs"),
        "--out": dict(help="folder for results.json and the plots"),
    }
    defaults = CompareConfig()
    for option, keywords in options.items():
        parser.add_argument(option, default=getattr(defaults, option[2:].replace("-", "_")), **keywords)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _resolve_options(config: CompareConfig) -> None:
    """Check ``--out`` and resolve ``--device``, ``--model`` and ``--dataset`` in place, in that order;
    UsageError naming the option."""
    option = "--out"
    try:
        if config.out is not None:
            check_out(config.out)
        option = "--device"
        config.device = resolve_device(config.device, name="--device")
        option = "--model"
        config.model_location = local_folder_or_hub_id(config.model, option, "config.json", "")
        option = "--dataset"
        hint = "; a test.jsonl alone is not enough to train on"
        config.dataset_location = local_folder_or_hub_id(config.dataset, option, "train.jsonl", hint)
    except (ValueError, FileNotFoundError) as err:
        message = str(err)
        raise UsageError(
            message if option in message or "COURSE_DEVICE" in message else f"{option}: {message}"
        ) from None


def parse_args(argv=None) -> CompareConfig:
    """Parse and check every option into a :class:`CompareConfig`; bad usage exits with status 2 and one line
    naming the option.

    Checked before any work: the numbers, ``--device`` (and ``$COURSE_DEVICE``), ``--out`` (created,
    and written to once), and that a local ``--model`` or ``--dataset`` exists.
    """
    parser = _parser()
    args = vars(parser.parse_args(argv))
    config = CompareConfig(**{k: v for k, v in args.items() if k != "no_progress"}, progress=not args["no_progress"])
    try:
        _resolve_options(config)
    except UsageError as err:
        parser.error(str(err))
    return config


def unique_prompts(pairs: list[dict]) -> list:
    """The distinct prompts of some pairs (strings or conversations), in a stable order."""
    seen = {}
    for pair in pairs:
        seen.setdefault(json.dumps(pair["prompt"], sort_keys=True), pair["prompt"])
    return [seen[key] for key in sorted(seen)]


@dataclasses.dataclass
class World:
    """What every run of one comparison shares: the reference, its tokenizer and the data."""

    reference: torch.nn.Module
    tokenizer: object
    train_pairs: list[dict]
    test_pairs: list[dict]
    test_prompts: list
    rankings: list[dict] | None
    reward_fn: object  # the toy task's true reward, or None (real data has none)


def _load_world(config: CompareConfig) -> World:
    """Load the model and the data; UsageError naming ``--model`` or ``--dataset`` for what cannot be read."""
    dtype = torch.bfloat16 if config.device.type == "cuda" and config.model is not None else None
    try:
        with models.hub_progress_bars(config.progress):
            reference, tokenizer = models.load_model_and_tokenizer(
                config.model_location, device=config.device, dtype=dtype
            )
    except (OSError, ValueError) as err:
        raise UsageError(f"--model {config.model or 'data/reference_model'!r}: {err}") from err
    try:
        train_pairs, test_pairs = load_pairs(
            config.dataset_location, config.labelling, tokenizer=tokenizer, context=context_limit(reference)
        )
    except (OSError, ValueError) as err:
        raise UsageError(f"--dataset {config.dataset or 'data/preferences'!r}: {err}") from err
    rankings = None
    if any(loss in RANKING_METHODS for loss in config.losses):
        if config.dataset is None:
            rankings = load_rankings("train")
        else:
            print("rrhf skipped: it needs ranked candidate sets, which only the toy data provides", file=sys.stderr)
    toy = config.model is None and config.dataset is None
    train_pairs = train_pairs[: config.max_train_pairs] if config.max_train_pairs else train_pairs
    reward_fn = true_rewards if toy else None
    return World(reference, tokenizer, train_pairs, test_pairs, unique_prompts(test_pairs), rankings, reward_fn)


def _settings(config: CompareConfig, world: World, batch_size: int, eval_batch_size: int) -> dict:
    """The trainers' keywords, with a held-out evaluation five times per run and at its end."""
    evaluate = evaluation.make_evaluator(
        world.reference, world.tokenizer, every=max(1, config.steps // 5), pairs=world.test_pairs,
        prompts=world.test_prompts, n_samples=config.eval_samples, seed=config.seed, reward_fn=world.reward_fn,
        batch_size=eval_batch_size,
    )  # fmt: skip
    return dict(steps=config.steps, lr=config.lr, seed=config.seed, device=config.device, tokenizer=world.tokenizer,
                progress=config.progress, batch_size=batch_size, evaluate=evaluate)  # fmt: skip


def _train_pairwise(policy, world: World, config: CompareConfig, loss: str, beta: float):
    settings = _settings(config, world, config.batch_size, config.batch_size)
    return training.train_preference(policy, world.reference, world.train_pairs, loss=loss, beta=beta, **settings)


def _train_rrhf(policy, world: World, config: CompareConfig, loss: str, beta: None):
    batch_size = max(1, config.batch_size // 4)  # prompts per step, K candidates each
    rows = batch_size * len(world.rankings[0]["responses"])  # sequences per step
    return training.train_rrhf(policy, world.rankings, **_settings(config, world, batch_size, max(1, rows // 2)))


#: Methods trained on ranked candidate sets (no beta; the toy data only). Every other method is a loss of
#: ``PAIRWISE_LOSSES``, trained by ``_train_pairwise``.
RANKING_METHODS = {"rrhf": _train_rrhf}


def planned_runs(config: CompareConfig, has_rankings: bool) -> list[tuple[str, float | None]]:
    """(method, beta) of every run, in order: each beta's runs together; a ranking method once, beta None."""
    runs = []
    for beta in config.beta:
        for loss in config.losses:
            if loss not in RANKING_METHODS:
                runs.append((loss, beta))
            elif has_rankings and beta == config.beta[0]:
                runs.append((loss, None))
    return runs


def run_label(loss: str, beta: float | None) -> str:
    return loss if beta is None else f"{loss} (beta={beta:g})"


def _final_evaluation(policy, history, world: World, config: CompareConfig) -> dict:
    """The held-out evaluation after the last step (the evaluator's, or a new one), and four samples."""
    if history.evals and history.evals[-1]["step"] == len(history):
        result = dict(history.evals[-1])
    else:
        result = evaluation.evaluate_policy(
            policy, world.reference, world.tokenizer, pairs=world.test_pairs, prompts=world.test_prompts,
            n_samples=config.eval_samples, seed=config.seed, reward_fn=world.reward_fn, with_samples=False,
        )  # fmt: skip
    result.pop("step", None)
    generator = torch.Generator().manual_seed(config.seed)
    shown = world.test_prompts[:4]  # (strings, or conversations for chat datasets)
    responses = sampling.sample_responses(policy, world.tokenizer, shown, generator=generator)
    result["samples"] = [{"prompt": p, "response": r} for p, r in zip(shown, responses)]
    return result


def run_one(loss: str, beta: float | None, world: World, config: CompareConfig) -> dict:
    """Train one method from a copy of the reference and evaluate it: its ``results.json`` entry.

    A run whose loss or gradient became non-finite is kept, with ``"failed"``; a Ctrl-C after its first
    step is kept, ``"interrupted"``, with its last held-out evaluation; one before it propagates.
    """
    policy = copy.deepcopy(world.reference).float()  # fp32 master weights; bf16 autocast computes on CUDA
    policy.requires_grad_(True)
    failed = None
    try:
        history = RANKING_METHODS.get(loss, _train_pairwise)(policy, world, config, loss, beta)
    except training.TrainingDiverged as err:
        history, failed = err.history, str(err)
        print(f"{run_label(loss, beta)} failed: {err}", file=sys.stderr)
    interrupted, held_out = history.interrupted, None
    if not interrupted and failed is None:
        try:
            held_out = _final_evaluation(policy, history, world, config)
        except KeyboardInterrupt:
            interrupted = True
    if held_out is None:  # stopped: its last held-out evaluation stands for it
        last = dict(history.evals[-1]) if history.evals else {"step": None, **NO_EVAL}
        held_out = {"eval_step": last.pop("step"), **last}
    run = {
        "loss": loss,
        "beta": beta,
        "eq11_margin": eq11_mean_margin(world.train_pairs, beta) if _has_eq11_optimum(loss) else None,
        "length_normalize": True if loss in RANKING_METHODS else loss_spec(loss).average_logps,
        "steps": config.steps,
        "seed": config.seed,
        "interrupted": interrupted,
        "history": list(history),
        "evals": history.evals,
        "eval": held_out,
    }
    return {**run, "failed": failed} if failed is not None else run


def run_comparison(config: CompareConfig, *, results: dict | None = None, on_run=None) -> dict:
    """Train and evaluate every (method, beta) run of ``config``; return the ``results.json`` dictionary.

    ``results`` (filled in place, so a caller keeps what is done if this raises) gets one entry in
    ``results["runs"]`` per run as soon as it ends, and ``on_run(results)`` is called then (``main``
    writes ``results.json`` there). Ctrl-C stops everything: the run in progress is kept, marked
    ``"interrupted"`` (its last held-out evaluation stands for its result), no further run starts, and
    ``results["interrupted"]`` is True. A failed run is kept, marked ``"failed"``, and the others go on.
    """
    results = results if results is not None else {}
    results.setdefault("model", config.model or "data/reference_model")
    results.setdefault("dataset", config.dataset or f"data/preferences ({config.labelling})")
    results.setdefault("runs", [])
    world = _load_world(config)
    with tiny_model_threads(world.reference):  # one thread for the toy model, set once for every run
        for loss, beta in planned_runs(config, world.rankings is not None):
            label = run_label(loss, beta)
            try:
                run = run_one(loss, beta, world, config)
            except KeyboardInterrupt:  # before the first step (the reference precompute, step 0's evaluation)
                print(f"interrupted: {label} had not taken a step; no further run starts", file=sys.stderr)
                results["interrupted"] = True
                return results
            results["runs"].append(run)
            if on_run is not None:
                on_run(results)
            if run["interrupted"]:
                print(
                    f"interrupted: {label} stopped after step {len(run['history'])}; no further run starts",
                    file=sys.stderr,
                )
                results["interrupted"] = True
                return results
    return results


def _has_eq11_optimum(method: str) -> bool:
    """Whether ``method``'s population optimum is Eq. 11's (the registry says; RRHF's is not)."""
    return method not in RANKING_METHODS and loss_spec(method).eq11_optimum


def eq11_mean_margin(pairs: list[dict], beta: float) -> float | None:
    """Mean of IPO's Eq. 11 optimum over ``pairs`` (:func:`course_lib.ipo_optimal_margins`), where IPO's margins go
    on this data set rather than Eq. 17's per-pair 1/(2 beta); None when the pairs carry no true rewards."""
    if not all("chosen_reward" in p and "rejected_reward" in p for p in pairs):
        return None
    return ipo_optimal_margins(pairs, beta=beta).mean().item()


def format_table(results: dict) -> str:
    """The comparison as a fixed-width text table; interrupted and failed runs are marked."""
    head = (
        f"{'loss':<6} {'beta':>5} {'final loss':>10} {'pref acc':>8} {'KL':>14} {'true reward':>14} {'margin':>8}"
        f" {'Eq. 11':>7}"
    )
    lines = [head, "-" * len(head)]
    for run in results["runs"]:
        e = run["eval"]
        last = run["history"][-1] if run["history"] else {}
        beta = "-" if run["beta"] is None else f"{run['beta']:g}"
        final = f"{last['loss']:.4f}" if "loss" in last else "-"
        acc = "-" if e["preference_accuracy"] is None else f"{e['preference_accuracy']:.3f}"
        kl = "-" if e["kl"] is None else f"{e['kl']:.3f}±{e['kl_stderr']:.3f}"
        reward = "-" if e["reward"] is None else f"{e['reward']:.3f}±{e['reward_stderr']:.3f}"
        margin = f"{last['margin']:.3f}" if "margin" in last else "-"
        eq11 = "-" if run.get("eq11_margin") is None else f"{run['eq11_margin']:.3f}"
        line = f"{run['loss']:<6} {beta:>5} {final:>10} {acc:>8} {kl:>14} {reward:>14} {margin:>8} {eq11:>7}"
        if run.get("failed") or run.get("interrupted"):
            what = "failed" if run.get("failed") else "interrupted"
            at = f" ({what} after step {len(run['history'])}"
            at += f"; held-out numbers from step {e['eval_step']})" if e.get("eval_step") is not None else ")"
            line += at
        lines.append(line)
    return "\n".join(lines)


def write_results(results: dict, out: Path) -> Path:
    """``out/results.json``, all or nothing (a temporary file, then ``os.replace``): a full disk or a
    second Ctrl-C leaves the previous file whole."""
    return write_atomically(out / "results.json", (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())


def write_plots(results: dict, out: Path) -> list[str]:
    """The PNGs of :func:`course_lib.teaching.plots.plot_comparison`, drawn into a temporary folder in
    ``out`` and moved into place one by one with ``os.replace`` (never a half-written PNG)."""
    from .teaching.plots import plot_comparison

    scratch = Path(tempfile.mkdtemp(dir=out, prefix=".plots-"))
    try:
        names = plot_comparison(results, scratch)
        for name in names:
            os.replace(scratch / name, out / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return names


def main(argv=None) -> int:
    """Run the comparison; exit status 0, 1 if a run failed, 2 on bad usage or input, 130 after Ctrl-C.

    ``results.json`` is written after every run (atomically), so what is done survives a later failure,
    a Ctrl-C or a full disk.
    """
    try:
        config = parse_args(argv)
    except SystemExit as done:  # --help, or bad usage (argparse's exit)
        return done.code if isinstance(done.code, int) else 0
    out = Path(config.out).expanduser() if config.out else None
    results: dict = {}

    def write_each_run(results: dict) -> None:
        try:
            write_results(results, out)
        except OSError as err:
            raise ResultsNotWritten(
                f"cannot write {out / 'results.json'} ({err.strerror or err}); the previous file is unchanged"
            ) from err

    try:
        run_comparison(config, results=results, on_run=write_each_run if out else None)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except ResultsNotWritten as err:
        print(f"{PROG}: error: {err}; training stopped", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while loading the model or the data, before any run
        print(f"{PROG}: interrupted before the first run; nothing written", file=sys.stderr)
        return 130
    status = 130 if results.get("interrupted") else 1 if any(r.get("failed") for r in results["runs"]) else 0
    if not results["runs"]:
        print(f"{PROG}: no run finished; nothing written", file=sys.stderr)
        return status
    print(format_table(results))
    if out:
        try:
            write_results(results, out)
            for name in write_plots(results, out):
                print(f"wrote {out / name}")
            print(f"wrote {out / 'results.json'}")
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted while writing; {out / 'results.json'} holds the finished runs", file=sys.stderr)
            return 130
        except OSError as err:
            print(
                f"{PROG}: error: cannot write into {out} ({err.strerror or err}); files already there are unchanged",
                file=sys.stderr,
            )
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
