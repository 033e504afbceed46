"""Rebuilds every toy-world artefact deterministically from one seed (the CLI is ``course_lib.build_data``).

    python -m course_lib.build_data [--out DIR] [--seed 0] [--small] [--force]

Steps: (1) an SFT corpus of synthetic reviews from a small grammar, (2) the
word-level tokenizer, (3) the reference GPT-2 trained on that corpus,
(4) preference pairs made from the reference model's own samples, labelled
deterministically and by Bradley-Terry coin flips, (5) RRHF rankings of K=4
samples, (6) a README datasheet and (7) MANIFEST.sha256. Everything runs on one
CPU thread with seeded generators, so two builds on the same machine are
identical byte for byte.
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from .data import MANIFEST, DataIntegrityError, data_dir, read_manifest, write_manifest
from .models import build_reference_config, build_tokenizer, hub_progress_bars
from .sampling import sample_responses
from .task import NEGATIVE_WORDS, POSITIVE_WORDS, PROMPTS, VOCAB, true_reward

FULL = dict(corpus=4000, steps=400, batch=64, pref_train=2000, pref_test=256, rank_train=500, rank_test=100)
SMALL = dict(corpus=400, steps=30, batch=32, pref_train=100, pref_test=30, rank_train=20, rank_test=10)
K = 4  # responses per ranking
LR = 3e-3  # the reference model's SFT learning rate
MAX_NEW_TOKENS = 12
OUTPUTS = ("sft", "preferences", "rankings", "reference_model", "README.md", MANIFEST)
#: Files an earlier build may hold that this one keeps (and lists in its manifest): built by other commands.
KEPT = ("bandit/d1_sweep.pt",)


class BuildRefused(ValueError):
    """``build`` would delete files that are not from an earlier build (pass ``force=True`` to allow it)."""


_INTENSIFIERS = ("very", "quite", "really", "so", "rather")
_NOUNS = ("plot", "acting", "story", "ending", "music", "pacing", "script", "cast", "dialogue", "soundtrack", "jokes")


# ----------------------------------------------------------------------------- 1. SFT corpus
def _clause(rng: random.Random, words: tuple[str, ...]) -> list[str]:
    """One clause built around sentiment words drawn from ``words``."""
    adj, adj2 = rng.sample(words, 2)
    form = rng.randrange(7)
    if form == 0:
        return [adj]
    if form == 1:
        return [rng.choice(_INTENSIFIERS), adj]
    if form == 2:
        return [adj, "and", adj2]
    if form == 3:
        return [adj] + rng.choice((["at", "times"], ["in", "places"]))
    if form == 4:
        return ["the", rng.choice(_NOUNS), "was", adj]
    if form == 5:
        return [rng.choice(("mostly", "also", "a bit", "too")), adj]
    return [rng.choice(_INTENSIFIERS), adj, "and", rng.choice(_INTENSIFIERS), adj2]


def synthetic_review(rng: random.Random) -> str:
    """Samples one continuation (3-12 tokens): positive, negative or mixed with equal probability."""
    kind = rng.choice(("positive", "negative", "mixed"))
    while True:
        n_clauses = rng.choice((1, 1, 2, 2, 3))
        polarity = rng.random() < 0.5  # for "mixed": which sentiment comes first
        words: list[str] = []
        for c in range(n_clauses):
            if kind == "mixed":
                positive = polarity if c % 2 == 0 else not polarity
            else:
                positive = kind == "positive"
            if c > 0:
                same = kind != "mixed"
                words += [rng.choice(("and", "also") if same else ("but", "yet"))] if rng.random() < 0.8 else ["."]
            words += _clause(rng, POSITIVE_WORDS if positive else NEGATIVE_WORDS)
        text = " ".join(words).split()  # "a bit" -> two tokens
        if rng.random() < 0.15:  # some stuttering repetition ("so so boring")
            i = rng.randrange(len(text))
            text.insert(i, text[i])
        text.append(".")
        if 3 <= len(text) <= 12:
            return " ".join(text)


def build_corpus(n: int, rng: random.Random) -> list[dict]:
    """Makes ``n`` SFT records ``{"prompt", "completion"}`` (completion without leading space)."""
    return [{"prompt": rng.choice(PROMPTS), "completion": synthetic_review(rng)} for _ in range(n)]


# ----------------------------------------------------------------------------- 3. reference model
def warmup_cosine(step: int, steps: int) -> float:
    """The reference model's lr multiplier at 0-based ``step``: linear warm-up over the first tenth of the
    steps, times a cosine decay from 1 to 0.1."""
    warmup = max(1, steps // 10)
    return min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))


#: How ``train_sft`` trains the reference model: AdamW, ``warmup_cosine``, gradients clipped at norm 1.
REFERENCE_RECIPE = dict(
    lr=LR,
    optimizer=functools.partial(torch.optim.AdamW, betas=(0.9, 0.98), weight_decay=0.01),
    lr_schedule=warmup_cosine,
    max_grad_norm=1.0,
)


def train_reference(corpus: list[dict], tokenizer, sizes: dict, seed: int, train_sft) -> tuple[GPT2LMHeadModel, float]:
    """The tiny GPT-2 trained by ``train_sft`` (the library's SFT loop, passed in by ``course_lib.build_data``)
    on the corpus, loss on completion + <eos> only; returns (model in eval mode, mean loss of the last 20 steps)."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(build_reference_config(len(tokenizer)))
    history = train_sft(
        model, corpus, steps=sizes["steps"], batch_size=sizes["batch"], seed=seed, device="cpu", tokenizer=tokenizer,
        progress=False, **REFERENCE_RECIPE,
    )  # fmt: skip
    model.eval()
    return model, _mean(history.column("loss")[-20:])


# ----------------------------------------------------------------------------- 4./5. preferences and rankings
def _cycle(prompts: list[str], start: int, n: int) -> list[str]:
    return [prompts[(start + j) % len(prompts)] for j in range(n)]


def build_pairs(model, tokenizer, n: int, generator: torch.Generator, prompts: list[str]) -> tuple[list, dict]:
    """Samples distinct, untied pairs ``(prompt, a, b, r_a, r_b)`` from the model until ``n`` are found."""
    pairs, seen, stats, start = [], set(), {"sampled": 0, "ties": 0, "duplicates": 0, "reward_sum": 0.0}, 0
    while len(pairs) < n:
        chunk = min(512, 64 + 2 * (n - len(pairs)))  # small builds sample little
        ps = _cycle(prompts, start, chunk)
        start += chunk
        a = sample_responses(model, tokenizer, ps, max_new_tokens=MAX_NEW_TOKENS, generator=generator)
        b = sample_responses(model, tokenizer, ps, max_new_tokens=MAX_NEW_TOKENS, generator=generator)
        for p, x, y in zip(ps, a, b):
            if len(pairs) == n:
                break
            rx, ry = true_reward(x), true_reward(y)
            stats["sampled"] += 2
            stats["reward_sum"] += rx + ry
            key = (p, frozenset((x, y)))
            if rx == ry:
                stats["ties"] += 1
            elif key in seen:
                stats["duplicates"] += 1
            else:
                seen.add(key)
                pairs.append((p, x, y, rx, ry))
    return pairs, stats


def label_pairs(pairs: list, generator: torch.Generator) -> tuple[list[dict], list[dict]]:
    """Labels each pair twice: deterministic (higher reward wins) and Bradley-Terry (first wins w.p. sigmoid(r1-r2))."""
    u = torch.rand(len(pairs), generator=generator, dtype=torch.float64).tolist()
    det, bt = [], []
    for (p, x, y, rx, ry), ui in zip(pairs, u):
        win, lose = (x, y) if rx > ry else (y, x)
        det.append(_pref(p, win, lose))
        first_wins = ui < 1 / (1 + math.exp(-(rx - ry)))
        bt.append(_pref(p, x, y) if first_wins else _pref(p, y, x))
    return det, bt


def _pref(prompt: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": prompt,
        "chosen": " " + chosen,
        "rejected": " " + rejected,
        "chosen_reward": round(true_reward(chosen), 4),
        "rejected_reward": round(true_reward(rejected), 4),
    }


def build_rankings(model, tokenizer, n: int, generator: torch.Generator, prompts: list[str], seen: set) -> list[dict]:
    """Makes ``n`` records of K distinct samples per prompt with their true rewards (sampling order kept)."""
    out, start = [], 0
    while len(out) < n:
        chunk = min(64, 8 + n - len(out))
        ps = _cycle(prompts, start, chunk)
        start += chunk
        cands = sample_responses(
            model, tokenizer, [p for p in ps for _ in range(2 * K)], max_new_tokens=MAX_NEW_TOKENS, generator=generator
        )
        for i, p in enumerate(ps):
            distinct = list(dict.fromkeys(cands[i * 2 * K : (i + 1) * 2 * K]))[:K]
            key = (p, tuple(sorted(distinct)))
            if len(distinct) == K and key not in seen and len(out) < n:
                seen.add(key)
                out.append(
                    {
                        "prompt": p,
                        "responses": [" " + r for r in distinct],
                        "rewards": [round(true_reward(r), 4) for r in distinct],
                    }
                )
    return out


# ----------------------------------------------------------------------------- writing
def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def _write_preferences(out: Path, model, tokenizer, prompts: list[str], sizes: dict, seed: int) -> tuple:
    """Step 4: preference pairs from the reference model's own samples, in both labellings."""
    cut = sizes["pref_train"]
    pairs, stats = build_pairs(
        model, tokenizer, cut + sizes["pref_test"], torch.Generator().manual_seed(seed + 1), prompts
    )
    det, bt = label_pairs(pairs, torch.Generator().manual_seed(seed + 2))
    splits = {"train": det[:cut], "test": det[cut:], "train_bradley_terry": bt[:cut], "test_bradley_terry": bt[cut:]}
    written = [_write_jsonl(out / f"preferences/{name}.jsonl", recs) for name, recs in splits.items()]
    return written, det, bt, stats


def _build_into(out: Path, seed: int, small: bool, say, train_sft) -> dict:
    """Runs steps 1-7 into ``out``; returns the statistics that the datasheet reports."""
    sizes, t0 = (SMALL if small else FULL), time.perf_counter()
    elapsed = lambda: f"({time.perf_counter() - t0:.1f}s)"  # noqa: E731
    rng = random.Random(seed)
    corpus = build_corpus(sizes["corpus"], rng)  # 1.-3. corpus, tokenizer, reference model
    sft = [{"prompt": r["prompt"], "completion": " " + r["completion"]} for r in corpus]
    written = [_write_jsonl(out / "sft/train.jsonl", sft)]
    tokenizer = build_tokenizer()
    model, loss = train_reference(corpus, tokenizer, sizes, seed, train_sft)
    model.save_pretrained(out / "reference_model")  # always safetensors in transformers 5
    tokenizer.save_pretrained(out / "reference_model")
    written += sorted((out / "reference_model").iterdir())
    say(f"[build_data] reference model: {sizes['steps']} steps, final loss {loss:.3f} {elapsed()}")
    prompts = list(PROMPTS)
    rng.shuffle(prompts)
    files, det, bt, pstats = _write_preferences(out, model, tokenizer, prompts, sizes, seed)  # 4.
    written += files
    say(f"[build_data] {len(det)} preference pairs {elapsed()}")
    gen, seen = torch.Generator().manual_seed(seed + 3), set()  # 5. (the shared `seen` keeps test out of train)
    rank = {s: build_rankings(model, tokenizer, sizes[f"rank_{s}"], gen, prompts, seen) for s in ("train", "test")}
    written += [_write_jsonl(out / f"rankings/{split}.jsonl", recs) for split, recs in rank.items()]
    say(f"[build_data] {sum(map(len, rank.values()))} rankings {elapsed()}")
    stats = {  # 6.-7. datasheet and manifest
        "seed": seed, "small": small, "sizes": sizes, "final_sft_loss": loss, "vocab_size": len(tokenizer),
        "n_params": sum(p.numel() for p in model.parameters()), "config": model.config,
        "corpus_reward": _mean(true_reward(r["completion"]) for r in corpus),
        "ref_reward": pstats["reward_sum"] / pstats["sampled"], "pair_stats": pstats, "det": det, "bt": bt,
        "cut": sizes["pref_train"], "rank": rank,
        "bt_agree": _mean(d["chosen"] == b["chosen"] for d, b in zip(det, bt)),
    }  # fmt: skip
    (out / "README.md").write_text(datasheet(stats), encoding="utf-8")
    kept = [rel for rel in KEPT if (out / rel).is_file()]  # e.g. the bandit sweep: listed, so loaders verify it
    write_manifest(out, [p.relative_to(out).as_posix() for p in [*written, out / "README.md"]] + kept)
    say(f"[build_data] wrote {out} {elapsed()}")
    return stats


def files_not_from_a_build(out: Path) -> list[Path]:
    """The files that building into ``out`` would delete but that no earlier build wrote there.

    A build replaces ``OUTPUTS``; a file among them counts as an earlier build's when ``out``'s
    ``MANIFEST.sha256`` lists it (the manifest itself too, when it parses).
    """
    doomed = []
    for name in OUTPUTS:
        target = out / name
        if target.is_dir():
            doomed += sorted(p for p in target.rglob("*") if not p.is_dir())
        elif target.exists() or target.is_symlink():
            doomed.append(target)
    try:
        listed = set(read_manifest(out)) | {MANIFEST}
    except DataIntegrityError:  # no manifest, or not one of ours
        listed = set()
    return [p for p in doomed if p.relative_to(out).as_posix() not in listed]


def build(
    out: str | Path | None = None,
    *,
    seed: int = 0,
    small: bool = False,
    verbose: bool = True,
    force: bool = False,
    train_sft,
) -> dict:
    """Builds everything into ``out`` (default: the data folder); returns the statistics in the datasheet.

    ``out`` must be empty, new, or an earlier build: a build replaces its outputs (``OUTPUTS``), and
    when that would delete a file the folder's manifest does not list (a README or a JSONL of your own),
    it raises :class:`BuildRefused` naming it and deletes nothing, unless ``force``. Other files in
    ``out`` are never touched.

    ``train_sft`` trains the reference model: the library's SFT loop
    (:func:`course_lib.loop.training.train_sft`), which ``python -m course_lib.build_data`` passes in (the toy
    world does not import the loop layer). Runs on one thread with deterministic algorithms; the global torch state
    (threads, determinism flag, RNG) is restored afterwards.
    """
    out = Path(out) if out is not None else data_dir()
    if out.exists() and not out.is_dir():
        raise BuildRefused(f"{out} is a file, not a folder: choose another --out")
    if out.is_dir() and not force:
        strangers = files_not_from_a_build(out)
        if strangers:
            shown = ", ".join(str(p) for p in strangers[:3]) + (
                f" and {len(strangers) - 3} more" if len(strangers) > 3 else ""
            )
            raise BuildRefused(
                f"{out} is not empty and not an earlier build: building there would delete {shown}. "
                "Choose an empty folder, or pass --force (force=True) to replace them."
            )
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # remove stale artefacts of an earlier build
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]), hub_progress_bars(False):
            return _build_into(out, seed, small, print if verbose else (lambda *a, **k: None), train_sft)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


# ----------------------------------------------------------------------------- 6. datasheet
def datasheet(s: dict) -> str:
    """Renders the README datasheet (the template ``datasheet.md`` beside this module) from build statistics
    (every number is computed)."""
    det, bt, cut, rank = s["det"], s["bt"], s["cut"], s["rank"]
    cmd = "python -m course_lib.build_data"
    cmd += (f" --seed {s['seed']}" if s["seed"] else "") + (" --small" if s["small"] else "")
    rows = [
        ("sft/train.jsonl", s["sizes"]["corpus"], "prompt, completion"),
        ("preferences/train.jsonl", cut, "prompt, chosen, rejected, chosen_reward, rejected_reward"),
        ("preferences/test.jsonl", len(det) - cut, "same"),
        ("preferences/train_bradley_terry.jsonl", cut, "same pairs as train.jsonl, Bradley-Terry labels"),
        ("preferences/test_bradley_terry.jsonl", len(bt) - cut, "same pairs as test.jsonl, Bradley-Terry labels"),
        ("rankings/train.jsonl", len(rank["train"]), f"prompt, responses ({K}), rewards ({K})"),
        ("rankings/test.jsonl", len(rank["test"]), f"prompt, responses ({K}), rewards ({K})"),
    ]
    rank_all = rank["train"] + rank["test"]
    return (Path(__file__).parent / "datasheet.md").read_text(encoding="utf-8").format(
        s=s, ps=s["pair_stats"], cfg=s["config"], cmd=cmd, cut=cut, K=K, MAX_NEW_TOKENS=MAX_NEW_TOKENS,
        lr=f"{LR:.0e}".replace("e-0", "e-"),  # 3e-3
        table="\n".join(f"| `{f}` | {n} | {d} |" for f, n, d in rows),
        rank_mean=_mean(x for r in rank_all for x in r["rewards"]),
        best_of_k=_mean(max(r["rewards"]) for r in rank_all),
        chosen_mean=_mean(r["chosen_reward"] for r in det[:cut]),
        rejected_mean=_mean(r["rejected_reward"] for r in det[:cut]), examined=s["pair_stats"]["sampled"] // 2,
        n_negative=len(NEGATIVE_WORDS), n_positive=len(POSITIVE_WORDS), n_prompts=len(PROMPTS), n_vocab=len(VOCAB),
        n_test=len(det) - cut, n_pairs=len(det), bt_agree_percent=100 * s["bt_agree"],
        chosen_tokens=_mean(len(r["chosen"].split()) for r in det),
        rejected_tokens=_mean(len(r["rejected"].split()) for r in det),
    )  # fmt: skip
