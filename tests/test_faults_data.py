"""The data folder under faults (issue 12): every file in the manifest and verified by the default loaders,
builds that never delete someone else's files, and loader errors that name the file and line.

Items covered: 7 (``build_data --out DIR`` refuses a folder that is not an earlier build, unless
``--force``), 8 (the manifest lists every file under ``data/``; the default loaders verify the reference
model and the bandit sweep; truncated files are named), 17 (a non-UTF-8 file), 21 (a mistyped local path
fails at once, without a network lookup).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from course_lib import build_data
from course_lib.toyworld import build as build_module
from course_lib.toyworld.bandit import D1_SWEEP, build_d1_sweep, load_d1_sweep
from course_lib.toyworld.build import KEPT, OUTPUTS, BuildRefused, build
from course_lib.toyworld.data import (
    MANIFEST,
    DataIntegrityError,
    load_preferences,
    read_manifest,
    sha256_file,
    verify_manifest,
    write_atomically,
)
from course_lib.toyworld.models import load_model_and_tokenizer

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of the committed data folder, made the default one (``$COURSE_DATA_DIR``)."""
    copy = Path(shutil.copytree(DATA, tmp_path / "data"))
    monkeypatch.setenv("COURSE_DATA_DIR", str(copy))
    return copy


@pytest.fixture
def no_network(monkeypatch):
    """Fail any DNS lookup or connection; the list of what was attempted is returned."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


# ----------------------------------------------------------------------------- item 8
def test_the_manifest_lists_every_file_under_data():
    on_disk = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert set(read_manifest(DATA)) == on_disk
    assert "bandit/d1_sweep.pt" in on_disk and "reference_model/model.safetensors" in on_disk
    verify_manifest(DATA)


def _swap_two_word_ids(path: Path) -> None:
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["great"], vocab["awful"] = vocab["awful"], vocab["great"]
    path.write_text(json.dumps(tokenizer))


def _shift_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_file({name: t + 1 for name, t in tensors.items()}, path, metadata={"format": "pt"})


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(
    "damage, rel",
    [
        (_swap_two_word_ids, "reference_model/tokenizer.json"),
        (_shift_weights, "reference_model/model.safetensors"),
        (_truncate, "reference_model/model.safetensors"),
        (lambda p: p.write_text("{}"), "reference_model/config.json"),
    ],
)
def test_the_default_model_loader_verifies_every_file(data_copy, damage, rel):
    damage(data_copy / rel)
    with pytest.raises(DataIntegrityError, match=rel.split("/")[-1]):
        load_model_and_tokenizer()
    with pytest.raises(DataIntegrityError, match=rel.split("/")[-1]):
        load_model_and_tokenizer(data_copy / "reference_model")  # the same folder, named


def test_a_stray_file_in_the_model_folder_is_refused(data_copy):
    (data_copy / "reference_model" / "chat_template.jinja").write_text("{{ messages }}")
    with pytest.raises(DataIntegrityError, match="chat_template.jinja is not listed"):
        load_model_and_tokenizer()


def test_the_default_model_loader_still_loads_the_committed_files(data_copy):
    model, tokenizer = load_model_and_tokenizer()
    assert model.config.n_positions == 32 and tokenizer.pad_token_id == 0


def test_a_truncated_model_outside_a_manifest_is_named(tmp_path):
    folder = Path(shutil.copytree(DATA / "reference_model", tmp_path / "model"))
    _truncate(folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors.*truncated or corrupt"):
        load_model_and_tokenizer(folder)
    shutil.copy(DATA / "reference_model" / "model.safetensors", folder / "model.safetensors")
    (folder / "tokenizer.json").write_text('{"version": ')
    with pytest.raises(ValueError, match=r"tokenizer.json.*truncated or corrupt"):
        load_model_and_tokenizer(folder)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte])
def test_the_default_sweep_loader_verifies_the_file(data_copy, damage):
    damage(data_copy / "bandit" / "d1_sweep.pt")
    with pytest.raises(DataIntegrityError, match="d1_sweep.pt"):
        load_d1_sweep()


def test_a_truncated_sweep_outside_a_manifest_is_named(tmp_path):
    path = tmp_path / "elsewhere" / "sweep.pt"
    path.parent.mkdir()
    shutil.copy(DATA / "bandit" / "d1_sweep.pt", path)
    assert load_d1_sweep(path)["probs"].shape[-1] == 3
    _truncate(path)
    with pytest.raises(ValueError, match=r"sweep.pt cannot be read .* truncated or corrupt"):
        load_d1_sweep(path)


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


# ----------------------------------------------------------------------------- item 7
def _run_build_data(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = build_data.main(argv)
    return code, err.getvalue()


@pytest.fixture
def no_real_build(monkeypatch):
    """Replace the expensive part of ``build`` (training, sampling) by one file: the checks around it stay."""
    calls = []

    def fake_build_into(out, seed, small, say):
        calls.append(out)
        (out / "sft").mkdir(parents=True, exist_ok=True)
        (out / "sft" / "train.jsonl").write_text("{}\n")
        kept = [rel for rel in KEPT if (out / rel).is_file()]
        build_module.write_manifest(out, ["sft/train.jsonl", *kept])
        return {}

    monkeypatch.setattr(build_module, "_build_into", fake_build_into)
    return calls


def test_build_refuses_a_folder_that_is_not_an_earlier_build(tmp_path, no_real_build):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    (out / "preferences").mkdir()
    (out / "preferences" / "mine.jsonl").write_text('{"a": 1}\n')
    (out / "other.txt").write_text("untouched")
    with pytest.raises(BuildRefused, match=r"not an earlier build.*README.md.*--force"):
        build(out, small=True, verbose=False)
    code, err = _run_build_data(["--out", str(out), "--small"])
    assert code == 2 and err.count("\n") == 1 and "--force" in err and "--out" in err
    assert (out / "README.md").read_text() == "my notes"
    assert (out / "preferences" / "mine.jsonl").is_file()
    assert no_real_build == []
    assert _run_build_data(["--out", str(out), "--small", "--force"])[0] == 0
    assert not (out / "README.md").exists() and not (out / "preferences").exists()
    assert (out / "other.txt").read_text() == "untouched"  # outside the build's outputs: never deleted


def test_build_accepts_an_empty_folder_and_an_earlier_build(tmp_path, no_real_build):
    out = tmp_path / "out"
    build(out, small=True, verbose=False)
    (out / "bandit").mkdir()
    shutil.copy(DATA / "bandit" / "d1_sweep.pt", out / "bandit" / "d1_sweep.pt")
    build(out, small=True, verbose=False)  # an earlier build: no refusal
    assert set(read_manifest(out)) == {"sft/train.jsonl", "bandit/d1_sweep.pt"}  # the kept sweep stays listed
    assert len(no_real_build) == 2


def test_the_committed_data_folder_counts_as_an_earlier_build():
    assert build_module.files_not_from_a_build(DATA) == []
    assert set(OUTPUTS) >= {"sft", "preferences", "rankings", "reference_model"}


def test_build_refuses_a_file_as_out(tmp_path, no_real_build):
    target = tmp_path / "file"
    target.write_text("x")
    code, err = _run_build_data(["--out", str(target)])
    assert code == 2 and "is a file" in err


# ----------------------------------------------------------------------------- item 17
def test_a_file_that_is_not_utf8_is_named_with_its_line(data_copy):
    path = data_copy / "preferences" / "test.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"the", b"th\xe9", 1)
    path.write_bytes(b"".join(lines))
    with pytest.raises(ValueError, match=r"test.jsonl, line 3: not UTF-8"):
        load_preferences("test", verify=False)


# ----------------------------------------------------------------------------- item 4 (the helper)
def test_write_atomically_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text('{"good": true}\n')

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, b'{"new": ' + b"1" * 10_000 + b"}")
    assert path.read_text() == '{"good": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_write_atomically_under_a_real_file_size_limit(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk, in a child process."""
    import subprocess
    import sys

    path = tmp_path / "results.json"
    path.write_text('{"good": true}\n')
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from course_lib.toyworld.data import write_atomically\n"
        "try:\n"
        f"    write_atomically({str(path)!r}, b'x' * 100_000)\n"
        "except OSError as err:\n"
        "    print('OSError', err.errno)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("OSError"), done.stderr
    assert path.read_text() == '{"good": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ----------------------------------------------------------------------------- item 21
@pytest.mark.parametrize(
    "name", ["data/reference_modl", "./reference_modl", "data/preferences/nope", "~/no_such_model"]
)
def test_a_mistyped_local_path_fails_at_once_without_the_network(name, no_network):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_and_tokenizer(name)
    assert no_network == []


def test_a_hub_id_is_still_a_hub_id():
    from course_lib.toyworld.data import local_path_or_hub_id

    for name in ("gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "trl-lib/ultrafeedback_binarized"):
        assert local_path_or_hub_id(name, "model") == name
    assert local_path_or_hub_id(str(DATA / "reference_model"), "model") == DATA / "reference_model"
    assert isinstance(local_path_or_hub_id(Path("data"), "model"), Path)
