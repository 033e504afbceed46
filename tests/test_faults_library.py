"""The toy world's library calls and data folder under bad input and faults: each bad argument or record is
refused with the error type and a message naming it; a failing step keeps the weights and the history; a
damaged data file is named; a build never deletes someone else's files; a mistyped local path fails at once,
with no network lookup."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from course_lib import build_data
from course_lib.loop.evaluation import evaluate_policy, make_evaluator
from course_lib.loop.training import TrainingDiverged, train_preference, train_rrhf, train_sft
from course_lib.maths.losses import dpo_loss
from course_lib.toyworld import build as build_module
from course_lib.toyworld.bandit import D1_SWEEP, build_d1_sweep, load_d1_sweep
from course_lib.toyworld.batching import encode_prompt_response
from course_lib.toyworld.build import KEPT, OUTPUTS, BuildRefused, build
from course_lib.toyworld.data import (
    MANIFEST,
    DataIntegrityError,
    load_preferences,
    load_rankings,
    load_sft_corpus,
    read_manifest,
    sha256_file,
    verify_manifest,
)
from course_lib.toyworld.models import load_model_and_tokenizer
from course_lib.toyworld.sampling import sample_responses
from course_lib.toyworld.task import true_reward

DATA = Path(__file__).resolve().parent.parent / "data"
NAN, INF = float("nan"), float("inf")
LONG = " great" * 40  # 40 words: longer than the toy model's 32 positions
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def w():
    reference, tokenizer = load_model_and_tokenizer()
    return SimpleNamespace(ref=reference, tok=tokenizer, pairs=load_preferences("train")[:32],
                           rankings=load_rankings("train")[:8])  # fmt: skip


def _policy(w):
    return copy.deepcopy(w.ref).requires_grad_(True)


def _train(w, policy=None, pairs=None, **kwargs):
    settings = dict(loss="dpo", beta=0.5, steps=3, batch_size=4, lr=1e-2, device="cpu", progress=False) | kwargs
    pairs = w.pairs if pairs is None else pairs
    return train_preference(policy or _policy(w), w.ref, pairs, tokenizer=w.tok, **settings)


def _changed(records, index, drop=None, **changes):
    """A copy of ``records[:4]`` where record ``index`` has ``changes`` (and has lost the field ``drop``)."""
    records = [dict(r) for r in records[:4]]
    records[index].update(changes)
    records[index].pop(drop, None)
    return records


def _rrhf(w, rankings=None, **kwargs):
    return train_rrhf(_policy(w), rankings or w.rankings, tokenizer=w.tok, device="cpu", progress=False, **kwargs)


def _sample(w, prompts=("the movie was",), **kwargs):
    return sample_responses(w.ref, w.tok, list(prompts) if isinstance(prompts, tuple) else prompts, **kwargs)


def case(name, fn, error, pattern, **marks):
    return pytest.param(fn, error, pattern, id=name, **marks)


def detached(pc, pr, rc, rr, *, beta):
    return dpo_loss(pc.detach(), pr.detach(), rc, rr, beta=beta)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
TOO_LONG = r"is \d+ tokens long .* allows 32"
VE, TE = ValueError, TypeError

# fmt: off
LIBRARY_FAULTS = [
    *[case(f"train_preference batch_size={v!r}", lambda w, v=v: _train(w, batch_size=v), error, "batch_size")
      for v, error in ((0, VE), (-1, VE), (2.5, TE), ("8", TE), (True, TE))],
    *[case(f"train_preference {key}={v!r}", lambda w, kw={key: v}: _train(w, **kw), error, key)
      for key, v, error in (("lr", -1.0, VE), ("lr", NAN, VE), ("lr", INF, VE), ("beta", 0.0, VE), ("beta", NAN, VE),
                            ("device", "foo", VE))],
    case("train_preference device='cuda'", lambda w: _train(w, device="cuda"), VE, "device", marks=NO_CUDA),
    case("train_preference a pair without chosen", lambda w: _train(w, pairs=_changed(w.pairs, 2, drop="chosen")), VE,
         r"pairs\[2\] has no 'chosen'"),
    case("train_preference a pair that is a string", lambda w: _train(w, pairs=["the movie was"]), TE, r"pairs\[0\]"),
    case("train_preference a frozen policy", lambda w: _train(w, copy.deepcopy(w.ref).requires_grad_(False)), VE,
         "no trainable parameters"),
    case("train_preference a loss without a gradient", lambda w: _train(w, loss=detached), TE, "does not require grad"),
    case("train_preference a loss returning a float", lambda w: _train(w, loss=lambda *a, beta: 0.5), TE,
         "torch.Tensor"),
    *[case(f"train_preference {field}={bad!r}", lambda w, c={field: bad}: _train(w, pairs=_changed(w.pairs, 3, **c)),
           error, said)
      for field, bad, error, said in (("prompt", 7, TE, "prompt 3"), ("prompt", None, TE, "prompt 3"),
                                      ("prompt", ["the", "movie"], VE, "prompt 3"), ("prompt", b"the", TE, "prompt 3"),
                                      ("prompt", "the zzyzx was", VE, "prompt 3"), ("chosen", 3.5, TE,
                                      "response 3 must be a string"), ("rejected", ["dull"], TE, "response 3"),
                                      ("chosen", " ", VE, "response 3"))],
    case("train_preference a response longer than the context", lambda w: _train(w, pairs=_changed(w.pairs, 2,
         rejected=LONG)), VE, r"pairs\[2\] \(prompt \+ rejected\) " + TOO_LONG),
    *[case(f"train_rrhf batch_size={v}", lambda w, v=v: _rrhf(w, batch_size=v), VE, "batch_size") for v in (0, -1)],
    case("train_rrhf a ranking without rewards", lambda w: _rrhf(w, _changed(w.rankings, 1, drop="rewards")), VE,
         r"rankings\[1\] has no 'rewards'"),
    case("train_rrhf a NaN reward", lambda w: _rrhf(w, [dict(r, rewards=[NAN, *r["rewards"][1:]]) for r in w.rankings],
         steps=1), VE, "candidate_rewards"),
    case("train_rrhf a response longer than the context", lambda w: _rrhf(w, [dict(r, responses=[*r["responses"][:2],
         LONG, *r["responses"][3:]]) for r in w.rankings]), VE, r"rankings\[0\] \(prompt \+ responses\[2\]\)"),
    case("train_sft no completion", lambda w: train_sft(_policy(w), [{"prompt": "the movie was"}], tokenizer=w.tok), VE,
         r"examples\[0\] has neither 'completion' nor 'response'"),
    *[case(f"sample_responses {key}={v}", lambda w, kw={key: v}: _sample(w, **kw), error, key)
      for key, v, error in (("temperature", NAN, VE), ("temperature", INF, VE), ("temperature", -1.0, VE),
                            ("max_new_tokens", 0, VE), ("max_new_tokens", 2.5, TE), ("max_new_tokens", 40, VE),
                            ("batch_size", 0, VE))],
    case("sample_responses a string of prompts", lambda w: _sample(w, "the movie was"), TE, "prompts must be a list"),
    case("sample_responses a prompt that is a number", lambda w: _sample(w, [3]), TE, "prompt 0"),
    case("encode a message without content", lambda w: encode_prompt_response(w.tok, [[{"role": "user", "content":
         "hi"}, {"role": "user"}]], ["great"]), VE, r"prompt 0: message 1 needs a string 'content'"),
    case("encode an unknown word", lambda w: encode_prompt_response(w.tok, ["the movie was"], ["zzyzx"]), VE, "zzyzx"),
    case("encode lists of different lengths", lambda w: encode_prompt_response(w.tok, ["a", "b"], ["great"]), VE,
         "prompts"),
    case("evaluate_policy n_samples=0", lambda w: evaluate_policy(w.ref, w.ref, w.tok, prompts=["the movie was"],
         n_samples=0), VE, "n_samples"),
    case("make_evaluator n_samples=0", lambda w: make_evaluator(w.ref, w.tok, every=1, prompts=["the movie was"],
         n_samples=0)(w.ref, 0, 1), VE, "n_samples"),
    case("evaluate_policy a pair longer than the context", lambda w: evaluate_policy(w.ref, w.ref, w.tok,
         pairs=_changed(w.pairs, 1, chosen=LONG)), VE, r"pairs\[1\]"),
    case("make_evaluator a pair longer than the context", lambda w: make_evaluator(w.ref, w.tok, every=1,
         pairs=_changed(w.pairs, 1, chosen=LONG))(w.ref, 0, 1), VE, r"pairs\[1\]"),
]
# fmt: on


@pytest.mark.parametrize("call, error, pattern", LIBRARY_FAULTS)
def test_a_bad_argument_is_named(w, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(w)


def test_a_stored_pair_longer_than_the_context_is_named_before_any_step(w, data_copy):
    """It loads (the loader knows no model), and training with it as held-out data names it."""
    path = data_copy / "preferences" / "test.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "chosen": LONG, "chosen_reward": true_reward(LONG)})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"pairs\[2\]|line 3"):
        held_out = load_preferences("test", verify=False)
        _train(w, evaluate=make_evaluator(w.ref, w.tok, every=1, pairs=held_out))


# ----------------------------------------------------------------------------- faults inside the loop
def _weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("spoil, step", [(lambda g: g * NAN, 3), (lambda g: g / 0.0, 2)], ids=["nan", "inf"])
def test_a_non_finite_gradient_with_a_finite_loss_stops_before_the_step(w, spoil, step):
    policy, seen = _policy(w), {"calls": 0}

    def loss(pc, pr, rc, rr, *, beta):
        seen["calls"] += 1
        if seen["calls"] == step:
            seen["weights"] = _weights(policy)  # the weights after the step before
            pc.register_hook(spoil)  # the loss stays finite, its gradient does not
        return dpo_loss(pc, pr, rc, rr, beta=beta)

    with pytest.raises(TrainingDiverged, match=rf"gradient became non-finite at step {step} \(in ") as caught:
        _train(w, policy, loss=loss, steps=5)
    after = _weights(policy)
    assert all(torch.equal(after[name], seen["weights"][name]) for name in after)  # the step was not taken
    assert caught.value.step == step and [e["step"] for e in caught.value.history] == list(range(1, step))
    assert all(p.grad is None for p in policy.parameters())


@pytest.mark.parametrize("fault, error", [("nan", "nan at step 3"), ("crash", "simulated")])
def test_a_failing_step_keeps_the_history(w, fault, error):
    seen = {"calls": 0}

    def loss(*logps, beta):
        seen["calls"] += 1
        if seen["calls"] == 3 and fault == "crash":
            raise RuntimeError("out of memory (simulated)")
        value = dpo_loss(*logps, beta=beta)
        return value * NAN if seen["calls"] == 3 else value

    with pytest.raises(TrainingDiverged if fault == "nan" else RuntimeError, match=error) as caught:
        _train(w, loss=loss, steps=5)
    assert [e["step"] for e in caught.value.history] == [1, 2] and all(e["loss"] > 0 for e in caught.value.history)


class _InfAtPadding(torch.nn.Module):
    """Wraps a causal LM: its logits are +inf at every padding position (where attention_mask is 0)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, attention_mask, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        out.logits = out.logits + torch.where((attention_mask == 0).unsqueeze(-1), INF, 0.0)  # keeps the gradient
        return out


def test_inf_logits_at_padding_leave_the_weights_finite(w):
    policy = _InfAtPadding(_policy(w))
    batch = encode_prompt_response(w.tok, [p["prompt"] for p in w.pairs], [p["chosen"] for p in w.pairs])
    assert (batch["attention_mask"] == 0).any()  # some rows are padded, so some logits are inf
    history = train_preference(policy, _InfAtPadding(w.ref), w.pairs, tokenizer=w.tok, steps=3, batch_size=8, lr=1e-2,
                               device="cpu", progress=False)  # fmt: skip
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(e["loss"])) for e in history)
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(policy.parameters(), w.ref.parameters()))


def test_train_sft_takes_the_sft_corpus(w):
    history = train_sft(_policy(w), load_sft_corpus()[:16], steps=2, batch_size=4, tokenizer=w.tok, device="cpu",
                        progress=False)  # fmt: skip
    assert len(history) == 2 and history[0]["loss"] > 0


# ----------------------------------------------------------------------------- the data folder
@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of the committed data folder, made the default one (``$COURSE_DATA_DIR``)."""
    copy_ = Path(shutil.copytree(DATA, tmp_path / "data"))
    monkeypatch.setenv("COURSE_DATA_DIR", str(copy_))
    return copy_


def _swap_two_word_ids(path):
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["great"], vocab["awful"] = vocab["awful"], vocab["great"]
    path.write_text(json.dumps(tokenizer))


def _shift_weights(path):
    from safetensors.torch import load_file, save_file

    save_file({name: t + 1 for name, t in load_file(path).items()}, path, metadata={"format": "pt"})


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


LOADERS = {"reference_model": load_model_and_tokenizer, "bandit": load_d1_sweep, "sft": load_sft_corpus,
           "preferences": lambda: load_preferences("train"), "rankings": lambda: load_rankings("test")}  # fmt: skip
DAMAGES = [(_swap_two_word_ids, "reference_model/tokenizer.json"), (_truncate, "reference_model/model.safetensors"),
           (_shift_weights, "reference_model/model.safetensors"), (_flip_a_byte, "reference_model/config.json"),
           (_flip_a_byte, "reference_model/tokenizer_config.json"), (_truncate, "bandit/d1_sweep.pt"),
           (_flip_a_byte, "bandit/d1_sweep.pt"), (_truncate, "preferences/train.jsonl"),
           (_flip_a_byte, "rankings/test.jsonl"), (_truncate, "sft/train.jsonl")]  # fmt: skip


@pytest.mark.parametrize("damage, rel", DAMAGES, ids=[f"{d.__name__[1:]} {rel}" for d, rel in DAMAGES])
def test_the_default_loaders_verify_every_file(data_copy, damage, rel):
    damage(data_copy / rel)
    folder = rel.split("/")[0]
    with pytest.raises(DataIntegrityError, match=Path(rel).name):
        LOADERS[folder]()
    if folder == "reference_model":
        with pytest.raises(DataIntegrityError, match=Path(rel).name):
            load_model_and_tokenizer(data_copy / folder)  # the same folder, named


def test_the_manifest_lists_every_file_and_the_committed_files_load(data_copy):
    on_disk = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert set(read_manifest(DATA)) == on_disk and "bandit/d1_sweep.pt" in on_disk
    verify_manifest(DATA)
    model, tokenizer = load_model_and_tokenizer()
    assert model.config.n_positions == 32 and tokenizer.pad_token_id == 0
    (data_copy / "reference_model" / "chat_template.jinja").write_text("{{ messages }}")
    with pytest.raises(DataIntegrityError, match="chat_template.jinja is not listed"):
        load_model_and_tokenizer()


def test_truncated_files_outside_a_manifest_are_named(tmp_path):
    folder = Path(shutil.copytree(DATA / "reference_model", tmp_path / "model"))
    _truncate(folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors.*truncated or corrupt"):
        load_model_and_tokenizer(folder)
    shutil.copy(DATA / "reference_model" / "model.safetensors", folder / "model.safetensors")
    (folder / "tokenizer.json").write_text('{"version": ')
    with pytest.raises(ValueError, match=r"tokenizer.json.*truncated or corrupt"):
        load_model_and_tokenizer(folder)
    sweep = tmp_path / "sweep.pt"
    shutil.copy(DATA / "bandit" / "d1_sweep.pt", sweep)
    assert load_d1_sweep(sweep)["probs"].shape[-1] == 3
    _truncate(sweep)
    with pytest.raises(ValueError, match=r"sweep.pt cannot be read .* truncated or corrupt"):
        load_d1_sweep(sweep)


def test_rebuilding_the_sweep_keeps_the_manifest_in_step(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "bandit").mkdir(parents=True)
    (folder / "README.md").write_text("x")
    (folder / MANIFEST).write_text(f"{sha256_file(folder / 'README.md')}  README.md\n")
    small = {"losses": ("ipo",), "betas": (0.5,), "seeds": (0,), "steps": 4, "record_every": 2}
    monkeypatch.setattr("course_lib.toyworld.bandit.D1_SWEEP", {**D1_SWEEP, **small})
    build_d1_sweep(folder / "bandit" / "d1_sweep.pt")
    assert set(read_manifest(folder)) == {"README.md", "bandit/d1_sweep.pt"}
    verify_manifest(folder)
    assert load_d1_sweep(folder / "bandit" / "d1_sweep.pt")["probs"].shape[:4] == (1, 1, 1, 2)


BAD_LINES = {  # line 3 of preferences/test.jsonl becomes ... (other bad lines: test_toy_world_data)
    "a JSON list": lambda line: b"[1, 2]",
    "not UTF-8": lambda line: line.replace(b"the", b"th\xe9", 1),
}


@pytest.mark.parametrize("bad", BAD_LINES)
def test_a_bad_line_is_named_with_its_file_and_number(data_copy, bad):
    path = data_copy / "preferences" / "test.jsonl"
    lines = path.read_bytes().splitlines()
    lines[2] = BAD_LINES[bad](lines[2])
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=r"test.jsonl, line 3"):
        load_preferences("test", verify=False)


def test_other_bad_loader_calls_are_named(data_copy):
    with pytest.raises(ValueError, match="split"):
        load_preferences("dev")
    with pytest.raises(ValueError, match="labelling"):
        load_preferences("train", labelling="coin")
    (data_copy / "preferences" / "test.jsonl").write_bytes(b"")
    with pytest.raises(ValueError, match="no records"):
        load_preferences("test", verify=False)


@pytest.fixture
def no_real_build(monkeypatch):
    """Replace the expensive part of ``build`` (training, sampling) by one file: the checks around it stay."""
    calls = []

    def fake_build_into(out, seed, small, say, *trainer):
        calls.append(out)
        (out / "sft").mkdir(parents=True, exist_ok=True)
        (out / "sft" / "train.jsonl").write_text("{}\n")
        build_module.write_manifest(out, ["sft/train.jsonl", *[rel for rel in KEPT if (out / rel).is_file()]])
        return {}

    monkeypatch.setattr(build_module, "_build_into", fake_build_into)
    return calls


def _build_data(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        return build_data.main(argv), err.getvalue()


def test_build_refuses_a_folder_that_is_not_an_earlier_build(tmp_path, no_real_build):
    out = tmp_path / "mine"
    (out / "preferences").mkdir(parents=True)
    (out / "README.md").write_text("my notes")
    (out / "preferences" / "mine.jsonl").write_text('{"a": 1}\n')
    (out / "other.txt").write_text("untouched")
    with pytest.raises(BuildRefused, match=r"not an earlier build.*README.md.*--force"):
        build(out, small=True, verbose=False, train_sft=train_sft)
    code, err = _build_data(["--out", str(out), "--small"])
    assert code == 2 and err.count("\n") == 1 and "--force" in err and "--out" in err
    assert (out / "README.md").read_text() == "my notes" and (out / "preferences" / "mine.jsonl").is_file()
    assert no_real_build == []
    assert _build_data(["--out", str(out), "--small", "--force"])[0] == 0
    assert not (out / "README.md").exists() and not (out / "preferences").exists()
    assert (out / "other.txt").read_text() == "untouched"  # outside the build's outputs: never deleted
    code, err = _build_data(["--out", str(out / "other.txt")])
    assert code == 2 and "is a file" in err and "--out" in err


def test_build_accepts_an_empty_folder_and_an_earlier_build(tmp_path, no_real_build):
    out = tmp_path / "out"
    build(out, small=True, verbose=False, train_sft=train_sft)
    (out / "bandit").mkdir()
    shutil.copy(DATA / "bandit" / "d1_sweep.pt", out / "bandit" / "d1_sweep.pt")
    build(out, small=True, verbose=False, train_sft=train_sft)  # an earlier build: no refusal
    assert set(read_manifest(out)) == {"sft/train.jsonl", "bandit/d1_sweep.pt"}  # the kept sweep stays listed
    assert len(no_real_build) == 2
    assert build_module.files_not_from_a_build(DATA) == [] and set(OUTPUTS) >= {"sft", "preferences", "rankings"}
