"""Probe the library and the CLIs with bad inputs and faults, and count how each one is handled.

    python scripts/probe_faults.py            # every probe (about a minute on 2 CPU cores)
    python scripts/probe_faults.py --quick    # the maths and argument probes only (a few seconds)
    python scripts/probe_faults.py -v         # one line per probe

Each probe feeds one bad input, or injects one fault, and sorts what happens into:

- ``clear``:  an error of a documented type (ValueError, TypeError, FileNotFoundError, the project's
  DataIntegrityError, TrainingDiverged, BuildRefused) whose message names the culprit (the argument, the
  option, the file and line); for a CLI: one line on stderr naming the option and exit status 2 (or the
  status the fault calls for: 130 after Ctrl-C, 1 when a write fails);
- ``ok``:     an edge case that must *work* (a huge margin, -inf on both sides of a KL, inf logits at an
  unscored position) and gave the exact answer;
- ``deep``:   an error, but of another type, or one whose message does not name the culprit, or a
  traceback out of a CLI;
- ``silent``: no error where one was due, or a wrong number;
- ``lost``:   a fault that lost or corrupted work: a results file gone or invalid, NaN weights, a history
  dropped, someone's files deleted.

It prints the counts by area and exits with status 1 if any probe is ``silent`` or ``lost`` (with
``--strict``, ``deep`` too). It writes only under a temporary folder.
"""

# ruff: noqa: B023  (each probe's lambda runs at once, inside its own loop iteration)

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from course_lib import compare  # noqa: E402
from course_lib.loop.training import TrainingDiverged, train_preference, train_rrhf, train_sft  # noqa: E402
from course_lib.maths.bandit import bandit_kl, ipo_bandit_optimum  # noqa: E402
from course_lib.maths.kl import kl_estimators, sequence_kl  # noqa: E402
from course_lib.maths.logprobs import IGNORE_INDEX, sequence_logps, token_logps  # noqa: E402
from course_lib.maths.losses import (  # noqa: E402
    PAIRWISE_LOSSES,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log_ratio_margin,
    rrhf_loss,
    rrhf_loss_terms,
    rrhf_scores,
)
from course_lib.maths.metrics import implicit_rewards, preference_metrics  # noqa: E402
from course_lib.toyworld.bandit import load_d1_sweep, train_bandit  # noqa: E402
from course_lib.toyworld.batching import encode_prompt_response  # noqa: E402
from course_lib.toyworld.build import BuildRefused  # noqa: E402
from course_lib.toyworld.data import (  # noqa: E402
    DataIntegrityError,
    load_preferences,
    load_rankings,
    load_sft_corpus,
)
from course_lib.toyworld.models import load_model_and_tokenizer  # noqa: E402
from course_lib.toyworld.sampling import sample_responses  # noqa: E402

DATA = REPO / "data"
CLEAR_TYPES = (ValueError, TypeError, FileNotFoundError, FloatingPointError)  # DataIntegrityError, BuildRefused
KINDS = ("clear", "ok", "deep", "silent", "lost")  # are ValueErrors; TrainingDiverged is a FloatingPointError


@dataclass
class Result:
    area: str
    name: str
    kind: str
    detail: str


RESULTS: list[Result] = []


def record(area: str, name: str, kind: str, detail: str = "") -> None:
    RESULTS.append(Result(area, name, kind, detail.replace("\n", " ")[:160]))


def _raised(err: BaseException, culprits: tuple[str, ...], types: tuple = CLEAR_TYPES) -> tuple[str, str]:
    message = f"{type(err).__name__}: {err}"
    if not isinstance(err, types):
        return "deep", message
    missing = [c for c in culprits if c.lower() not in str(err).lower()]
    return ("deep", f"does not name {missing}: {message}") if missing else ("clear", message)


def expect_error(area: str, name: str, fn: Callable, *culprits: str, types: tuple = CLEAR_TYPES) -> None:
    """``fn()`` must raise a documented error (one of ``types``) whose message holds every string in ``culprits``."""
    try:
        value = fn()
    except Exception as err:  # noqa: BLE001 (sorting every error is the point)
        record(area, name, *_raised(err, culprits, types))
    else:
        record(area, name, "silent", f"returned {value!r}"[:160])


def expect_value(area: str, name: str, fn: Callable, check: Callable) -> None:
    """``fn()`` must return a value that passes ``check`` (edge cases that must work)."""
    try:
        value = fn()
    except Exception as err:  # noqa: BLE001
        record(area, name, "deep", f"raised {type(err).__name__}: {err}")
        return
    try:
        good = check(value)
    except Exception as err:  # noqa: BLE001
        good, value = False, f"{value!r} ({type(err).__name__} in the check)"
    record(area, name, "ok" if good else "silent", "" if good else f"got {value!r}"[:160])


def expect_no_loss(area: str, name: str, fn: Callable) -> None:
    """``fn()`` injects a fault and returns a list of what was lost (empty: nothing) and a note."""
    try:
        lost, note = fn()
    except Exception as err:  # noqa: BLE001
        record(area, name, "deep", f"{type(err).__name__}: {err} | {traceback.format_exc(limit=2)[-200:]}")
        return
    record(area, name, "lost" if lost else "clear", "; ".join(lost) if lost else note)


def run_cli(main: Callable, argv: list[str]) -> tuple[int | None, str, str, BaseException | None]:
    out, err = io.StringIO(), io.StringIO()
    raised = None
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0
        except BaseException as error:  # noqa: BLE001
            raised = error
    return code, out.getvalue(), err.getvalue(), raised


def expect_cli(area: str, name: str, main: Callable, argv: list[str], *culprits: str, status: int = 2) -> None:
    """One line on stderr naming ``culprits``, exit status ``status``, no traceback."""
    code, _, stderr, raised = run_cli(main, argv)
    lines = [line for line in stderr.splitlines() if line.strip()]
    if raised is not None:
        record(area, name, "deep", f"raised {type(raised).__name__}: {raised}")
    elif code == 0:
        record(area, name, "silent", "exit status 0")
    elif code != status or len(lines) != 1 or "Traceback" in stderr:
        record(area, name, "deep", f"status {code}, {len(lines)} stderr lines: {stderr[-160:]}")
    elif any(c.lower() not in stderr.lower() for c in culprits):
        record(area, name, "deep", f"does not name {culprits}: {stderr}")
    else:
        record(area, name, "clear", stderr.strip())


@contextlib.contextmanager
def patched(target, name: str, value):
    """Set ``target.name`` (or ``target[name]`` for a dict) to ``value`` for the block."""
    is_dict = isinstance(target, dict)
    old = target[name] if is_dict else getattr(target, name)
    if is_dict:
        target[name] = value
    else:
        setattr(target, name, value)
    try:
        yield
    finally:
        if is_dict:
            target[name] = old
        else:
            setattr(target, name, old)


@contextlib.contextmanager
def env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ============================================================================ maths
def probe_maths() -> None:
    area = "maths"
    g = torch.Generator().manual_seed(0)
    four = [torch.randn(3, generator=g) for _ in range(4)]
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    with_beta = {"dpo_loss": dpo_loss, "ipo_loss": ipo_loss, "hinge_loss": hinge_loss}
    everything = {**with_beta, "log_ratio_margin": log_ratio_margin, "preference_metrics": preference_metrics}

    def call(fn, args, **kw):
        if fn is not log_ratio_margin:
            kw.setdefault("beta", 0.1)
        return lambda: fn(*args, **kw)

    for fname, fn in everything.items():
        for i, arg in enumerate(names):
            bad = list(four)
            bad[i] = four[i].tolist()
            expect_error(area, f"{fname}: {arg} a list", call(fn, bad), arg)
            bad[i] = torch.tensor([1, 2, 3])
            expect_error(area, f"{fname}: {arg} integer", call(fn, bad), arg)
            bad[i] = four[i].reshape(3, 1)
            expect_error(area, f"{fname}: {arg} 2-D", call(fn, bad), arg)
            bad[i] = four[i][:2]
            expect_error(area, f"{fname}: {arg} shorter", call(fn, bad), arg)
            bad[i] = four[i].to("meta")
            expect_error(area, f"{fname}: {arg} on another device", call(fn, bad), arg, "device")
        inputs = [t.clone() for t in four]
        call(fn, inputs)()
        expect_value(area, f"{fname}: inputs not mutated", lambda: inputs, lambda x: all(map(torch.equal, x, four)))
    for fname, fn in {**with_beta, "preference_metrics": preference_metrics}.items():
        for beta in (0, -1.0, float("nan"), float("inf"), "0.1", None, True, np.float32("nan")):
            expect_error(area, f"{fname}: beta={beta!r}", call(fn, four, beta=beta), "beta")
        for beta in (np.float32(0.1), np.float64(0.1), torch.tensor(0.1), np.int64(1)):
            expect_value(
                area, f"{fname}: beta={type(beta).__name__}", call(fn, four, beta=beta), lambda v: v is not None
            )
    for margin in (float("nan"), float("inf")):
        expect_error(area, f"dpo_loss: margin={margin}", call(dpo_loss, four, margin=margin), "margin")
    for eps in (0.5, -0.1, float("nan")):
        expect_error(
            area, f"dpo_loss: label_smoothing={eps}", call(dpo_loss, four, label_smoothing=eps), "label_smoothing"
        )
    empty = [torch.zeros(0)] * 4
    expect_error(area, "preference_metrics: empty batch", call(preference_metrics, empty), "empty")
    expect_error(
        area, "implicit_rewards: devices", lambda: implicit_rewards(four[0], four[1].to("meta"), beta=0.1), "device"
    )
    expect_error(area, "kl_estimators: devices", lambda: kl_estimators(four[0].to("meta"), four[1]), "device")

    # numerics that must be exact
    def pair(h, dtype=torch.float32):
        z = torch.zeros(1, dtype=dtype)
        return torch.tensor([h], dtype=dtype), z, z.clone(), z.clone()

    for h, beta, dtype in (
        (6e4, 2.0, torch.float16),
        (float("inf"), 0.1, torch.float32),
        (3e38, 10.0, torch.float32),
        (1e38, 1e3, torch.bfloat16),
    ):
        expect_value(
            area,
            f"dpo_loss exact 0 at h={h:g}, beta={beta:g}, {dtype}",
            lambda: dpo_loss(*pair(h, dtype), beta=beta).item(),
            lambda v: v == 0.0,
        )
        expect_value(
            area,
            f"ipo_loss finite at h={h:g}, {dtype}",
            lambda: ipo_loss(*pair(h, dtype), beta=beta).item(),
            lambda v: v > 0,
        )
        expect_value(
            area,
            f"hinge_loss exact 0 at h={h:g}, {dtype}",
            lambda: hinge_loss(*pair(h, dtype), beta=beta).item(),
            lambda v: v == 0.0,
        )
    expect_value(area, "dpo_loss at h=-inf is inf", lambda: dpo_loss(*pair(float("-inf")), beta=0.1).item(), math.isinf)
    expect_value(
        area,
        "cDPO at h=+inf is inf",
        lambda: dpo_loss(*pair(float("inf")), beta=0.1, label_smoothing=0.1).item(),
        math.isinf,
    )
    expect_value(area, "dpo_loss at h=-1e4 (fp32)", lambda: dpo_loss(*pair(-1e4), beta=1.0).item(), lambda v: v == 1e4)

    # log-probs and the KL
    logits = torch.randn(2, 6, 5, generator=g)
    labels = torch.tensor([[-100, -100, 4, 0, 2, -100], [-100, 2, 3, 4, 0, -100]])
    clean = sequence_logps(logits, labels)
    for bad in (float("inf"), float("-inf"), float("nan")):
        for pos, where in ((0, "prompt"), (4, "padding")):

            def grads(bad=bad, pos=pos):
                x = logits.clone()
                x[0, pos, 1] = bad
                x.requires_grad_(True)
                value = sequence_logps(x, labels, average=True)
                value.sum().backward()
                return value, x.grad

            expect_value(
                area,
                f"sequence_logps: {bad} logit at the {where}: value and gradient finite",
                grads,
                lambda vg: bool(torch.isfinite(vg[0]).all() and torch.isfinite(vg[1]).all()),
            )
    expect_value(
        area,
        "sequence_logps unchanged by the mask",
        lambda: sequence_logps(logits, labels),
        lambda v: torch.equal(v, clean),
    )
    expect_error(area, "token_logps: logits 2-D", lambda: token_logps(logits[0], labels), "logits")
    expect_error(area, "token_logps: float labels", lambda: token_logps(logits, labels.float()), "labels")
    expect_error(area, "token_logps: labels shape", lambda: token_logps(logits, labels[:, :3]), "labels")
    expect_error(
        area,
        "token_logps: label outside the vocabulary",
        lambda: token_logps(logits, labels.clamp(min=0) + 5),
        "vocabulary",
    )
    expect_error(
        area, "token_logps: labels on another device", lambda: token_logps(logits, labels.to("meta")), "device"
    )
    expect_error(
        area,
        "sequence_logps: average with nothing scored",
        lambda: sequence_logps(logits, torch.full_like(labels, IGNORE_INDEX), average=True),
        "no scored token",
    )
    ref = torch.randn(2, 6, 5, generator=g)
    both_out_p, both_out_r = logits.clone(), ref.clone()
    both_out_p[..., 4] = float("-inf")
    both_out_r[..., 4] = float("-inf")
    expect_value(
        area,
        "sequence_kl: -inf on the same token in both models",
        lambda: sequence_kl(both_out_p, both_out_r, labels),
        lambda v: torch.allclose(v, sequence_kl(logits[..., :4], ref[..., :4], labels)),
    )
    only_ref = ref.clone()
    only_ref[0, 2, 1] = float("-inf")
    expect_value(
        area,
        "sequence_kl: -inf only in the reference is inf",
        lambda: sequence_kl(logits, only_ref, labels)[0].item(),
        math.isinf,
    )

    def kl_grad():
        x = logits.clone()
        x[0, 0, 1] = float("nan")
        x.requires_grad_(True)
        sequence_kl(x, ref, labels).sum().backward()
        return x.grad

    expect_value(
        area,
        "sequence_kl: NaN logit at the prompt, gradient finite",
        kl_grad,
        lambda gr: bool(torch.isfinite(gr).all()),
    )
    expect_error(area, "sequence_kl: shapes", lambda: sequence_kl(logits, ref[:1], labels), "ref_logits")
    expect_error(area, "sequence_kl: devices", lambda: sequence_kl(logits, ref.to("meta"), labels), "device")

    # RRHF
    logps, lengths, rewards = (
        torch.tensor([[-3.0, -4.0, -5.0]]),
        torch.tensor([[3, 4, 5]]),
        torch.tensor([[1.0, 0.0, 2.0]]),
    )
    expect_error(
        area,
        "rrhf_loss_terms: NaN reward",
        lambda: rrhf_loss_terms(logps, lengths, torch.tensor([[1.0, float("nan"), 0.0]])),
        "candidate_rewards",
        "NaN",
    )
    for bad in ([[3, 0, 5]], [[3, -1, 5]], [[3.0, float("nan"), 5.0]], [[3.0, float("inf"), 5.0]]):
        expect_error(
            area,
            f"rrhf_loss: lengths {bad}",
            lambda bad=bad: rrhf_loss(logps, torch.tensor(bad), rewards),
            "candidate_lengths",
        )
        expect_error(
            area,
            f"rrhf_scores: lengths {bad}",
            lambda bad=bad: rrhf_scores(logps, torch.tensor(bad)),
            "candidate_lengths",
        )
    for key, value in (
        ("length_penalty", float("nan")),
        ("length_penalty", float("inf")),
        ("sft_weight", float("nan")),
        ("sft_weight", -1.0),
    ):
        expect_error(
            area, f"rrhf_loss: {key}={value}", lambda k=key, v=value: rrhf_loss(logps, lengths, rewards, **{k: v}), key
        )
    expect_error(area, "rrhf_loss: K = 1", lambda: rrhf_loss(logps[:, :1], lengths[:, :1], rewards[:, :1]), "K")
    expect_error(area, "rrhf_loss: shapes", lambda: rrhf_loss(logps, lengths[:, :2], rewards), "shape")
    expect_error(area, "rrhf_loss: devices", lambda: rrhf_loss(logps, lengths, rewards.to("meta")), "device")
    expect_error(area, "rrhf_loss: int logps", lambda: rrhf_loss(logps.long(), lengths, rewards), "candidate_logps")
    expect_value(
        area,
        "rrhf_loss: infinite rewards order",
        lambda: rrhf_loss_terms(
            torch.tensor([[-3.0, -8.0]]), torch.tensor([[1, 1]]), torch.tensor([[float("-inf"), float("inf")]])
        ),
        lambda rs: rs[0].item() == 5.0 and rs[1].item() == 8.0,
    )

    # the bandit
    expect_error(
        area,
        "bandit: ref_probs NaN",
        lambda: ipo_bandit_optimum([(0, 1)], beta=0.1, ref_probs=[0.5, float("nan")]),
        "ref_probs",
    )
    expect_error(
        area,
        "bandit: ref_probs negative",
        lambda: ipo_bandit_optimum([(0, 1)], beta=0.1, ref_probs=[1.5, -0.5]),
        "ref_probs",
    )
    expect_error(
        area, "bandit: ref_probs sum", lambda: ipo_bandit_optimum([(0, 1)], beta=0.1, ref_probs=[0.5, 0.6]), "ref_probs"
    )
    for prefs in ([(0, 1.7)], [(0.5, 1)], [(0, 0)], [(-1, 1)], [], [(True, 0)], "ab"):
        expect_error(
            area, f"bandit: preferences {prefs!r}", lambda p=prefs: ipo_bandit_optimum(p, beta=0.1), "preferences"
        )
    expect_error(area, "bandit: disconnected", lambda: ipo_bandit_optimum([(0, 1), (2, 3)], beta=0.1), "connect")
    for probs in ([0.5, 0.6, 0.1], [1.2, -0.2, 0.0], [float("nan"), 0.5, 0.5], [[0.3, 0.3, 0.3]], [1.0]):
        expect_error(area, f"bandit_kl: probs {probs}", lambda p=probs: bandit_kl(torch.tensor(p)), "probs")
    expect_value(
        area,
        "bandit_kl: a one-hot policy",
        lambda: bandit_kl(torch.tensor([1.0, 0.0, 0.0])).item(),
        lambda v: abs(v - math.log(3)) < 1e-6,
    )
    for key, value in (("lr", float("nan")), ("steps", 0), ("batch_size", 0), ("beta", -1.0)):
        kwargs = {"loss": "ipo", "beta": 0.1, "steps": 2, key: value}
        expect_error(area, f"train_bandit: {key}={value}", lambda kw=kwargs: train_bandit([(0, 1)], **kw), key)


# ============================================================================ library calls on the toy world
class InfAtPadding(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, attention_mask, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        out.logits = out.logits + torch.where((attention_mask == 0).unsqueeze(-1), float("inf"), 0.0)
        return out


def probe_library() -> None:
    area = "library"
    reference, tokenizer = load_model_and_tokenizer()
    pairs = load_preferences("train")[:24]
    rankings = load_rankings("train")[:6]

    def fresh():
        policy = copy.deepcopy(reference)
        return policy.requires_grad_(True)

    def train(policy=None, data=None, **kw):
        settings = dict(
            loss="dpo", beta=0.5, steps=2, batch_size=4, lr=1e-2, device="cpu", progress=False, tokenizer=tokenizer
        )
        settings.update(kw)
        return lambda: train_preference(policy or fresh(), reference, data if data is not None else pairs, **settings)

    for key, value in (
        ("batch_size", 0),
        ("batch_size", -1),
        ("batch_size", 2.5),
        ("lr", float("nan")),
        ("lr", -1.0),
        ("lr", float("inf")),
        ("steps", 0),
        ("beta", 0.0),
        ("beta", float("nan")),
        ("loss", "ppo"),
    ):
        expect_error(
            area, f"train_preference: {key}={value!r}", train(**{key: value}), key if key != "loss" else "loss"
        )
    expect_error(area, "train_preference: no pairs", train(data=[]), "pairs")
    no_chosen = [dict(p) for p in pairs[:4]]
    del no_chosen[2]["chosen"]
    expect_error(area, "train_preference: a pair without chosen", train(data=no_chosen), "pairs[2]", "chosen")
    expect_error(area, "train_preference: a pair that is a string", train(data=["the movie was"]), "pairs[0]")
    expect_error(
        area,
        "train_preference: frozen policy",
        train(policy=copy.deepcopy(reference).requires_grad_(False)),
        "trainable",
    )
    expect_error(
        area,
        "train_preference: a loss without a gradient",
        train(loss=lambda pc, pr, rc, rr, *, beta: dpo_loss(pc.detach(), pr.detach(), rc, rr, beta=beta)),
        "grad",
    )
    expect_error(area, "train_preference: a loss returning a float", train(loss=lambda *a, beta: 0.5), "torch.Tensor")
    for field, bad in (
        ("prompt", 7),
        ("prompt", None),
        ("chosen", 3.5),
        ("rejected", ["dull"]),
        ("prompt", "the zzyzx was"),
        ("chosen", " "),
        ("rejected", " great" * 40),
    ):
        data = [dict(p) for p in pairs[:4]]
        data[3][field] = bad
        culprit = "prompt 3" if field == "prompt" else ("pairs[3]" if "great great" in str(bad) else "response 3")
        expect_error(area, f"train_preference: {field}={str(bad)[:20]!r}", train(data=data), culprit)
    expect_error(
        area,
        "train_rrhf: batch_size=0",
        lambda: train_rrhf(fresh(), rankings, batch_size=0, tokenizer=tokenizer),
        "batch_size",
    )
    no_rewards = [dict(r) for r in rankings]
    del no_rewards[1]["rewards"]
    expect_error(
        area,
        "train_rrhf: a ranking without rewards",
        lambda: train_rrhf(fresh(), no_rewards, tokenizer=tokenizer),
        "rankings[1]",
        "rewards",
    )
    nan_rewards = [dict(r, rewards=list(r["rewards"])) for r in rankings]
    for r in nan_rewards:
        r["rewards"][0] = float("nan")
    expect_error(
        area,
        "train_rrhf: a NaN reward",
        lambda: train_rrhf(fresh(), nan_rewards, steps=1, tokenizer=tokenizer, device="cpu", progress=False),
        "candidate_rewards",
    )
    expect_value(
        area,
        "train_sft(load_sft_corpus())",
        lambda: train_sft(
            fresh(), load_sft_corpus()[:8], steps=1, batch_size=4, tokenizer=tokenizer, device="cpu", progress=False
        ),
        lambda h: len(h) == 1,
    )
    expect_error(
        area,
        "train_sft: no completion",
        lambda: train_sft(fresh(), [{"prompt": "the movie was"}], tokenizer=tokenizer),
        "completion",
    )
    for key, value in (
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("temperature", -1.0),
        ("max_new_tokens", 0),
        ("max_new_tokens", 40),
        ("batch_size", 0),
    ):
        culprit = "max_new_tokens" if key == "max_new_tokens" else key
        expect_error(
            area,
            f"sample_responses: {key}={value}",
            lambda k=key, v=value: sample_responses(reference, tokenizer, ["the movie was"], **{k: v}),
            culprit,
        )
    expect_error(
        area,
        "sample_responses: a string of prompts",
        lambda: sample_responses(reference, tokenizer, "the movie was"),
        "prompts",
    )
    expect_error(
        area,
        "sample_responses: a prompt that is a number",
        lambda: sample_responses(reference, tokenizer, [3]),
        "prompt 0",
    )
    expect_error(
        area,
        "encode: a message without content",
        lambda: encode_prompt_response(tokenizer, [[{"role": "user"}]], ["great"]),
        "content",
    )
    expect_error(
        area,
        "encode: an unknown word",
        lambda: encode_prompt_response(tokenizer, ["the movie was"], ["zzyzx"]),
        "zzyzx",
    )
    expect_error(
        area,
        "encode: lists of different lengths",
        lambda: encode_prompt_response(tokenizer, ["a", "b"], ["great"]),
        "prompts",
    )

    # faults inside the loop
    def nan_gradient():
        policy = fresh()
        calls = {"n": 0, "before": None}

        def loss(pc, pr, rc, rr, *, beta):
            calls["n"] += 1
            if calls["n"] == 2:
                calls["before"] = [p.detach().clone() for p in policy.parameters()]
                pc.register_hook(lambda grad: grad * float("nan"))
            return dpo_loss(pc, pr, rc, rr, beta=beta)

        lost = []
        try:
            train(policy=policy, loss=loss, steps=4)()
            lost.append("no error: training went on past a NaN gradient")
        except TrainingDiverged as err:
            if err.step != 2:
                lost.append(f"names step {err.step}, not 2")
            if len(err.history) != 1:
                lost.append(f"history has {len(err.history)} steps, not 1")
        if not all(torch.isfinite(p).all() for p in policy.parameters()):
            lost.append("NaN weights")
        elif calls["before"] is not None and not all(map(torch.equal, policy.parameters(), calls["before"])):
            lost.append("the weights changed at the failed step")
        return lost, "stopped before the step, weights as after step 1"

    expect_no_loss(area, "NaN gradient with a finite loss", nan_gradient)

    def nan_loss():
        calls = {"n": 0}

        def loss(*a, beta):
            calls["n"] += 1
            value = dpo_loss(*a, beta=beta)
            return value * float("nan") if calls["n"] == 3 else value

        try:
            train(loss=loss, steps=5)()
        except FloatingPointError as err:
            steps = [e["step"] for e in getattr(err, "history", [])]
            return ([] if steps == [1, 2] else [f"history {steps}"]), str(err)[:80]
        return ["no error"], ""

    expect_no_loss(area, "non-finite loss keeps the history", nan_loss)

    def inf_logits():
        policy = InfAtPadding(fresh())
        train_preference(
            policy,
            InfAtPadding(reference),
            pairs,
            steps=2,
            batch_size=8,
            lr=1e-2,
            device="cpu",
            progress=False,
            tokenizer=tokenizer,
        )
        finite = all(torch.isfinite(p).all() for p in policy.parameters())
        return ([] if finite else ["NaN weights"]), "weights finite"

    expect_no_loss(area, "inf logits at padding positions", inf_logits)


# ============================================================================ data files and loaders
def probe_data(tmp: Path) -> None:
    area = "data"
    copy_dir = Path(shutil.copytree(DATA, tmp / "data"))

    def damaged(rel: str, damage: Callable[[Path], None], load: Callable):
        def go():
            shutil.copy(DATA / rel, copy_dir / rel)
            damage(copy_dir / rel)
            try:
                with env(COURSE_DATA_DIR=str(copy_dir)):
                    return load()
            finally:
                shutil.copy(DATA / rel, copy_dir / rel)

        return go

    def swap_ids(path: Path):
        tok = json.loads(path.read_text())
        vocab = tok["model"]["vocab"]
        vocab["great"], vocab["awful"] = vocab["awful"], vocab["great"]
        path.write_text(json.dumps(tok))

    def shift(path: Path):
        from safetensors.torch import load_file, save_file

        save_file({k: v + 1 for k, v in load_file(path).items()}, path, metadata={"format": "pt"})

    def truncate(path: Path):
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)

    def flip(path: Path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))

    model = lambda: load_model_and_tokenizer()  # noqa: E731
    for rel, damage in (
        ("reference_model/tokenizer.json", swap_ids),
        ("reference_model/model.safetensors", shift),
        ("reference_model/model.safetensors", truncate),
        ("reference_model/config.json", flip),
        ("reference_model/tokenizer_config.json", flip),
        ("bandit/d1_sweep.pt", truncate),
        ("bandit/d1_sweep.pt", flip),
        ("preferences/train.jsonl", truncate),
        ("rankings/test.jsonl", flip),
        ("sft/train.jsonl", truncate),
    ):
        load = (
            model
            if rel.startswith("reference_model")
            else load_d1_sweep
            if rel.startswith("bandit")
            else (lambda r=rel: load_preferences("train"))
            if rel.startswith("preferences")
            else (lambda: load_rankings("test"))
            if rel.startswith("rankings")
            else load_sft_corpus
        )
        expect_error(
            area,
            f"{damage.__name__} {rel} (default loader)",
            damaged(rel, damage, load),
            Path(rel).name,
            types=(DataIntegrityError,),
        )
    outside = tmp / "model"
    shutil.copytree(DATA / "reference_model", outside)
    truncate(outside / "model.safetensors")
    expect_error(
        area, "truncated weights outside a manifest", lambda: load_model_and_tokenizer(outside), "model.safetensors"
    )
    shutil.copy(DATA / "reference_model" / "model.safetensors", outside / "model.safetensors")
    (outside / "tokenizer.json").write_text('{"version": ')
    expect_error(
        area, "truncated tokenizer outside a manifest", lambda: load_model_and_tokenizer(outside), "tokenizer.json"
    )
    sweep = tmp / "sweep.pt"
    shutil.copy(DATA / "bandit" / "d1_sweep.pt", sweep)
    truncate(sweep)
    expect_error(area, "truncated sweep outside a manifest", lambda: load_d1_sweep(sweep), "sweep.pt")
    (copy_dir / "reference_model" / "extra.bin").write_bytes(b"x")
    expect_error(
        area,
        "a stray file in the model folder",
        lambda: load_model_and_tokenizer(copy_dir / "reference_model"),
        "extra.bin",
    )
    (copy_dir / "reference_model" / "extra.bin").unlink()

    # toy loaders: one bad line each
    original = (DATA / "preferences" / "test.jsonl").read_bytes().splitlines(keepends=True)
    for what, line, culprit in (
        (b'{"prompt": "the movie was"', "malformed JSON", "line 3"),
        (b"[1, 2]\n", "JSON object", "line 3"),
        (b'{"prompt": "the movie was", "chosen": " great ."}\n', "missing field", "line 3"),
        (
            json.dumps(
                {
                    "prompt": "the movie was",
                    "chosen": " great .",
                    "rejected": " great .",
                    "chosen_reward": 1.0,
                    "rejected_reward": 1.0,
                }
            ).encode()
            + b"\n",
            "same response",
            "line 3",
        ),
        (original[2].replace(b"the", b"th\xe9", 1), "not UTF-8", "line 3"),
        (original[2].replace(b'"chosen": " ', b'"chosen": " zzyzx ', 1), "zzyzx", "line 3"),
    ):

        def bad_file(what=what):
            (copy_dir / "preferences" / "test.jsonl").write_bytes(b"".join(original[:2] + [what] + original[3:]))
            return load_preferences("test", data_dir=copy_dir, verify=False)

        expect_error(area, f"toy loader: {line}", bad_file, "test.jsonl", culprit)
    (copy_dir / "preferences" / "test.jsonl").write_bytes(b"")
    expect_error(
        area,
        "toy loader: an empty file",
        lambda: load_preferences("test", data_dir=copy_dir, verify=False),
        "no records",
    )
    expect_error(area, "toy loader: split 'dev'", lambda: load_preferences("dev"), "split")
    expect_error(area, "toy loader: labelling 'coin'", lambda: load_preferences("train", labelling="coin"), "labelling")

    # mistyped local paths: at once, and no network
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the probe")

    for name in ("data/reference_modl", "./reference_modl", "~/no_such_model", "data/preferences/nope"):
        with patched(socket, "getaddrinfo", refuse), patched(socket.socket, "connect", refuse), contextlib.chdir(REPO):
            expect_error(
                area, f"mistyped model path {name}", lambda n=name: load_model_and_tokenizer(n), "does not exist"
            )
    record(
        area, "mistyped paths made no network lookup", "clear" if not attempts else "deep", f"{len(attempts)} lookups"
    )

    # build_data: someone's folder
    from course_lib import build_data

    mine = tmp / "mine"
    (mine / "preferences").mkdir(parents=True)
    (mine / "README.md").write_text("my notes")
    (mine / "preferences" / "mine.jsonl").write_text('{"a": 1}\n')

    def refuses():
        code, _, stderr, raised = run_cli(build_data.main, ["--out", str(mine), "--small"])
        lost = [p for p in ("README.md", "preferences/mine.jsonl") if not (mine / p).is_file()]
        if raised is not None:
            lost.append(f"raised {type(raised).__name__}")
        if code != 2 or "--force" not in stderr:
            lost.append(f"status {code}: {stderr[-80:]}")
        return lost, stderr.strip()[:120]

    expect_no_loss(area, "build_data --out a folder that is not a build", refuses)
    a_file = tmp / "a_file"
    a_file.write_text("x")
    expect_cli(area, "build_data --out a file", build_data.main, ["--out", str(a_file)], "--out")
    from course_lib.toyworld.build import build

    def build_refused():
        try:
            build(mine, small=True, verbose=False)
        except BuildRefused:
            raise
        except Exception as err:  # noqa: BLE001
            raise AssertionError(f"not BuildRefused: {type(err).__name__}: {err}") from err

    expect_error(area, "build(): a folder that is not a build", build_refused, "--force", "README.md")


# ============================================================================ compare: bad usage and bad datasets
def _toy_folder(folder: Path, n_train: int = 16, n_test: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(DATA / "preferences" / f"{split}.jsonl") as f:
            rows = [json.loads(line) for line, _ in zip(f, range(n))]
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n" for r in rows)
        )
    return folder


def small_args(dataset: Path, out: Path | None = None, *extra: str) -> list[str]:
    argv = [
        "--dataset",
        str(dataset),
        "--losses",
        "dpo",
        "ipo",
        "--steps",
        "2",
        "--eval-samples",
        "4",
        "--batch-size",
        "4",
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]
    return argv + (["--out", str(out)] if out else [])


def probe_compare_usage(tmp: Path) -> None:
    area = "compare usage"

    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    a_file = tmp / "a_file"
    a_file.write_text("x")
    empty = tmp / "empty"
    empty.mkdir()
    only_test = tmp / "only_test"
    only_test.mkdir()
    (only_test / "test.jsonl").write_text("{}\n")
    cases = [
        *[(["--beta", v], "--beta") for v in ("inf", "nan", "0", "-1", "zero", "1e400")],
        (["--beta=-inf"], "--beta"),
        (["--beta", "0.5", "-1"], "--beta"),
        *[(["--lr", v], "--lr") for v in ("-1", "nan", "inf", "0", "fast")],
        *[(["--batch-size", v], "--batch-size") for v in ("0", "-1", "2.5")],
        *[(["--eval-samples", v], "--eval-samples") for v in ("0", "-3")],
        *[(["--steps", v], "--steps") for v in ("0", "-5", "1e3")],
        *[(["--max-train-pairs", v], "--max-train-pairs") for v in ("0", "-1")],
        (["--seed", "-1"], "--seed"),
        *[(["--device", v], "--device") for v in ("foo", "tpu", "cuda:x")],
        *(
            [(["--device", "cuda"], "--device"), (["--device", "cuda:0"], "--device")]
            if not torch.cuda.is_available()
            else []
        ),
        (["--device", "mps"], "--device")
        if not (torch.backends.mps.is_available())
        else (["--device", "foo"], "--device"),
        (["--losses", "ppo"], "--losses"),
        (["--labelling", "coin"], "--labelling"),
        (["--model", "data/reference_modl"], "--model"),
        (["--model", "/no/such/folder"], "--model"),
        (["--model", str(empty)], "--model"),
        (["--model", str(a_file)], "--model"),
        (["--model", str(DATA / "preferences")], "--model"),
        (["--dataset", "data/preferencs"], "--dataset"),
        (["--dataset", str(empty)], "--dataset"),
        (["--dataset", str(only_test)], "--dataset"),
        (["--dataset", str(a_file)], "--dataset"),
        (["--out", str(a_file)], "--out"),
        (["--out", str(a_file / "sub")], "--out"),
        (["--unknown"], "--unknown"),
    ]
    with (
        patched(__import__("course_lib.toyworld.models").toyworld.models, "load_model_and_tokenizer", must_not_load),
        contextlib.chdir(REPO),
    ):
        for argv, option in cases:
            expect_cli(area, " ".join(argv), compare.main, argv, option)
        for value in (["cuda"] if not torch.cuda.is_available() else []) + ["foo", "cuda:x"]:
            with env(COURSE_DEVICE=value):
                expect_cli(area, f"COURSE_DEVICE={value}", compare.main, [], "COURSE_DEVICE")
    record(area, "a_file untouched", "clear" if a_file.read_text() == "x" else "lost", "")

    area = "compare datasets"
    pair = {"prompt": "the movie was", "chosen": " great fun .", "rejected": " dull ."}
    rows = [
        ("malformed JSON", 3, '{"prompt": "the movie was", "chosen": " great"'),
        ("missing rejected", 2, {"prompt": "x", "chosen": " great ."}),
        ("missing chosen", 2, {"prompt": "the movie was", "rejected": " dull ."}),
        ("a list", 2, ["the movie was"]),
        ("a number", 2, "7"),
        ("same response", 4, {**pair, "rejected": " great fun ."}),
        ("same after spaces", 4, {**pair, "rejected": "great fun .  "}),
        ("empty chosen", 2, {**pair, "chosen": ""}),
        ("blank rejected", 2, {**pair, "rejected": "   "}),
        ("empty prompt", 2, {**pair, "prompt": ""}),
        ("no shared prompt", 2, {"chosen": "great .", "rejected": "dull ."}),
        ("prompt a number", 2, {**pair, "prompt": 42}),
        ("chosen a number", 2, {**pair, "chosen": 1}),
        ("unknown word", 5, {**pair, "rejected": " dull zzyzx ."}),
        (
            "message without content",
            3,
            {
                "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant"}],
                "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}],
            },
        ),
        (
            "message not a dict",
            3,
            {
                "chosen": [{"role": "user", "content": "hi"}, "oops"],
                "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}],
            },
        ),
        ("chosen text, rejected messages", 2, {**pair, "rejected": [{"role": "assistant", "content": "dull"}]}),
        ("too long", 2, {**pair, "chosen": " great" * 40}),
        ("null chosen", 2, {**pair, "chosen": None}),
    ]
    for split in ("train", "test"):
        for what, line, row in rows:
            folder = _toy_folder(tmp / f"ds-{split}-{what.replace(' ', '_')}")
            path = folder / f"{split}.jsonl"
            lines = path.read_text().splitlines()
            lines[line - 1] = row if isinstance(row, str) else json.dumps(row)
            path.write_text("\n".join(lines) + "\n")
            expect_cli(area, f"{split}: {what}", compare.main, small_args(folder), f"{split}.jsonl, line {line}")
        folder = _toy_folder(tmp / f"ds-{split}-empty")
        (folder / f"{split}.jsonl").write_text("")
        expect_cli(area, f"{split}: empty file", compare.main, small_args(folder), f"{split}.jsonl")
        folder = _toy_folder(tmp / f"ds-{split}-latin1")
        (folder / f"{split}.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
        expect_cli(area, f"{split}: not UTF-8", compare.main, small_args(folder), f"{split}.jsonl, line 1")
    one = _toy_folder(tmp / "ds-one", n_train=1)
    (one / "test.jsonl").unlink()
    expect_cli(area, "one pair, no test split", compare.main, small_args(one), "nothing to hold out")


# ============================================================================ compare: faults and lost work
def probe_compare_faults(tmp: Path) -> None:
    area = "compare faults"
    dataset = _toy_folder(tmp / "faults-ds")
    original_losses = dict(PAIRWISE_LOSSES)
    import course_lib.loop.training as training_module

    def results(out: Path) -> dict:
        return json.loads((out / "results.json").read_text())

    def crash_in_second_run():
        out = tmp / "crash"

        def crash(*a, **k):
            raise RuntimeError("simulated CUDA out of memory")

        with patched(PAIRWISE_LOSSES, "ipo", crash):
            _, _, _, raised = run_cli(compare.main, small_args(dataset, out))
        lost = [] if isinstance(raised, RuntimeError) else [f"raised {raised!r}"]
        try:
            runs = results(out)["runs"]
            if [r["loss"] for r in runs] != ["dpo"] or len(runs[0]["history"]) != 2:
                lost.append(f"results.json holds {[r['loss'] for r in runs]}")
        except (OSError, ValueError) as err:
            lost.append(f"the first run's results are gone: {err}")
        return lost, "the first run is in results.json"

    expect_no_loss(area, "a crash in the second run", crash_in_second_run)

    def diverged_first_run():
        out = tmp / "diverged"
        calls = {"n": 0}

        def nan_at_2(*a, **k):
            calls["n"] += 1
            value = original_losses["dpo"](*a, **k)
            return value * float("nan") if calls["n"] == 2 else value

        with patched(PAIRWISE_LOSSES, "dpo", nan_at_2):
            code, stdout, stderr, raised = run_cli(compare.main, small_args(dataset, out))
        lost = [] if raised is None and code == 1 else [f"status {code}, raised {raised!r}"]
        runs = results(out)["runs"] if (out / "results.json").is_file() else []
        if [r["loss"] for r in runs] != ["dpo", "ipo"] or "failed" not in runs[0] or len(runs[0]["history"]) != 1:
            lost.append(f"runs {[(r['loss'], len(r['history']), 'failed' in r) for r in runs]}")
        if "failed after step 1" not in stdout:
            lost.append("the table does not mark the failed run")
        return lost, "kept as failed with its step, IPO ran, exit 1"

    expect_no_loss(area, "a run that diverges", diverged_first_run)

    def ctrl_c_at_step(step: int):
        def go():
            out = tmp / f"ctrl-c-{step}"
            calls = {"n": 0}

            def interrupt(*a, **k):
                calls["n"] += 1
                if calls["n"] == step:
                    raise KeyboardInterrupt
                return original_losses["dpo"](*a, **k)

            with patched(PAIRWISE_LOSSES, "dpo", interrupt):
                code, stdout, stderr, raised = run_cli(compare.main, small_args(dataset, out))
            lost = [] if raised is None and code == 130 else [f"status {code}, raised {raised!r}"]
            if "Traceback" in stderr:
                lost.append("a traceback")
            data = results(out) if (out / "results.json").is_file() else {"runs": []}
            runs = data["runs"]
            if (
                [r["loss"] for r in runs] != ["dpo"]
                or not runs[0]["interrupted"]
                or len(runs[0]["history"]) != step - 1
            ):
                lost.append(f"runs {[(r['loss'], len(r['history']), r['interrupted']) for r in runs]}")
            if not data.get("interrupted") or "interrupted after step" not in stdout:
                lost.append("not marked interrupted")
            return lost, f"exit 130, the run kept with {step - 1} step(s), IPO not started"

        return go

    expect_no_loss(area, "Ctrl-C at step 1", ctrl_c_at_step(1))
    expect_no_loss(area, "Ctrl-C at step 2", ctrl_c_at_step(2))

    def ctrl_c_in(where: str):
        def go():
            out = tmp / f"ctrl-c-{where}"
            state = {"runs": 0}
            original_train, original_scoring = training_module.train_preference, training_module.response_logps

            def counting(*a, **k):
                state["runs"] += 1
                return original_train(*a, **k)

            def scoring(model, batch, **k):
                if where == "precompute" and state["runs"] == 2 and not torch.is_grad_enabled():
                    raise KeyboardInterrupt
                return original_scoring(model, batch, **k)

            def sampling(*a, **k):
                raise KeyboardInterrupt

            def loading(*a, **k):
                raise KeyboardInterrupt

            sampling_module = __import__("course_lib.toyworld.sampling").toyworld.sampling
            models_module = __import__("course_lib.toyworld.models").toyworld.models
            with (
                patched(training_module, "train_preference", counting),
                patched(training_module, "response_logps", scoring),
                patched(
                    sampling_module,
                    "sample_responses",
                    sampling if where == "final evaluation" else sampling_module.sample_responses,
                ),
                patched(
                    models_module,
                    "load_model_and_tokenizer",
                    loading if where == "loading" else models_module.load_model_and_tokenizer,
                ),
            ):
                code, stdout, stderr, raised = run_cli(compare.main, small_args(dataset, out))
            lost = [] if raised is None and code == 130 else [f"status {code}, raised {raised!r}"]
            if "Traceback" in stderr:
                lost.append("a traceback")
            if where == "loading":
                return lost + (
                    ["results.json written"] if (out / "results.json").exists() else []
                ), "exit 130, nothing to keep"
            runs = results(out)["runs"] if (out / "results.json").is_file() else []
            expected = {"precompute": [("dpo", 2, False)], "final evaluation": [("dpo", 2, True)]}[where]
            if [(r["loss"], len(r["history"]), r["interrupted"]) for r in runs] != expected:
                lost.append(f"runs {[(r['loss'], len(r['history']), r['interrupted']) for r in runs]}")
            return lost, "exit 130, finished work kept"

        return go

    for where in ("precompute", "final evaluation", "loading"):
        expect_no_loss(area, f"Ctrl-C in the {where}", ctrl_c_in(where))

    def disk_full():
        out = tmp / "disk-full"
        code, _, _, _ = run_cli(compare.main, small_args(dataset, out, "--losses", "dpo"))
        before = (out / "results.json").read_bytes()

        def no_space(fd):
            raise OSError(28, "No space left on device")

        with patched(os, "fsync", no_space):
            code, _, stderr, raised = run_cli(compare.main, small_args(dataset, out, "--seed", "1"))
        lost = [] if raised is None and code == 1 else [f"status {code}, raised {raised!r}"]
        if (out / "results.json").read_bytes() != before:
            lost.append("results.json changed")
        stray = [p.name for p in out.iterdir() if p.name.startswith(".")]
        if stray:
            lost.append(f"temporary files left: {stray}")
        return lost, "the previous results.json and PNGs whole, exit 1"

    expect_no_loss(area, "disk full while writing results.json", disk_full)


def probe_subprocesses(tmp: Path) -> None:
    """Real faults in child processes: a real SIGINT, and a real file-size limit (a full disk's stand-in)."""
    area = "compare processes"
    dataset = _toy_folder(tmp / "proc-ds")
    out = tmp / "proc-out"
    wrapper = textwrap.dedent(f"""
        import os, resource, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from course_lib import compare
        from course_lib.maths.losses import PAIRWISE_LOSSES
        mode = sys.argv[1]
        if mode == "sigint":
            calls = {{"n": 0}}
            original = PAIRWISE_LOSSES["dpo"]
            def loss(*a, **k):
                calls["n"] += 1
                if calls["n"] == 2:
                    os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, through Python's own handler
                return original(*a, **k)
            PAIRWISE_LOSSES["dpo"] = loss
        if mode == "fsize":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
        sys.exit(compare.main(sys.argv[2:]))
    """)
    script = tmp / "wrapper.py"
    script.write_text(wrapper)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def child(mode: str, argv: list[str]):
        return subprocess.run(
            [sys.executable, str(script), mode, *argv], capture_output=True, text=True, timeout=300, env=environment
        )

    def real_sigint():
        done = child("sigint", small_args(dataset, out))
        lost = [] if done.returncode == 130 else [f"status {done.returncode}"]
        if "Traceback" in done.stderr:
            lost.append("a traceback")
        runs = json.loads((out / "results.json").read_text())["runs"] if (out / "results.json").is_file() else []
        if [(r["loss"], len(r["history"]), r["interrupted"]) for r in runs] != [("dpo", 1, True)]:
            lost.append(f"runs {[(r['loss'], len(r['history'])) for r in runs]}")
        return lost, "exit 130, the interrupted run kept"

    expect_no_loss(area, "a real SIGINT at step 2", real_sigint)

    def real_fsize_limit():
        before = (out / "results.json").read_bytes()
        done = child("fsize", small_args(dataset, out, "--seed", "3"))
        lost = [] if done.returncode == 1 else [f"status {done.returncode}: {done.stderr[-200:]}"]
        if "Traceback" in done.stderr:
            lost.append("a traceback")
        if (out / "results.json").read_bytes() != before:
            lost.append("results.json changed or truncated")
        json.loads(before)
        stray = [p.name for p in out.iterdir() if p.name.startswith(".")]
        return lost + ([f"temporary files left: {stray}"] if stray else []), "the previous results.json whole, exit 1"

    expect_no_loss(area, "a real file-size limit (full disk)", real_fsize_limit)

    def offline_local_run():
        block = textwrap.dedent(f"""
            import socket, sys
            sys.path.insert(0, {str(REPO)!r})
            calls = []
            def refuse(*a, **k):
                calls.append(a)
                raise OSError("network disabled")
            socket.getaddrinfo = refuse
            socket.socket.connect = refuse
            from course_lib import compare
            code = compare.main(sys.argv[1:])
            print("LOOKUPS", len(calls))
            sys.exit(code)
        """)
        path = tmp / "offline.py"
        path.write_text(block)
        model = shutil.copytree(DATA / "reference_model", tmp / "offline-model")
        done = subprocess.run(
            [sys.executable, str(path), *small_args(dataset, None, "--model", str(model), "--losses", "dpo")],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
        )
        lost = (
            []
            if done.returncode == 0 and "LOOKUPS 0" in done.stdout
            else [f"status {done.returncode}, {done.stdout[-40:]}"]
        )
        return lost, "no DNS lookup, no connection"

    expect_no_loss(area, "a local --model/--dataset run is offline", offline_local_run)


# ============================================================================ report
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the maths and the CLI's argument checks only")
    parser.add_argument("--strict", action="store_true", help="exit 1 on deep errors too")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per probe")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="probe_faults-") as tmp:
        probe_maths()
        probe_compare_usage(Path(tmp))
        if not args.quick:
            probe_library()
            probe_data(Path(tmp))
            probe_compare_faults(Path(tmp))
            probe_subprocesses(Path(tmp))
    by_area: dict[str, Counter] = defaultdict(Counter)
    for r in RESULTS:
        by_area[r.area][r.kind] += 1
        if args.verbose or r.kind in ("silent", "lost", "deep"):
            print(f"{r.kind:>6}  {r.area:<18} {r.name:<60} {r.detail}")
    total = Counter(r.kind for r in RESULTS)
    print(f"\n{'area':<18}" + "".join(f"{k:>8}" for k in KINDS) + f"{'probes':>8}")
    for area, counts in by_area.items():
        print(f"{area:<18}" + "".join(f"{counts[k]:>8}" for k in KINDS) + f"{sum(counts.values()):>8}")
    print(f"{'total':<18}" + "".join(f"{total[k]:>8}" for k in KINDS) + f"{len(RESULTS):>8}")
    print(
        f"\n{len(RESULTS)} probes: {total['clear']} clear errors, {total['ok']} edge cases right, {total['deep']} deep "
        f"tracebacks, {total['silent']} silent wrong results, {total['lost']} with lost work"
    )
    bad = total["silent"] + total["lost"] + (total["deep"] if args.strict else 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
