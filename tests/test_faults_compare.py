"""``python -m course_lib.compare`` under bad usage, bad datasets and faults, run through ``main``: one line
naming the option and exit status 2 before any work; a bad row named by its file and line; a crash, a
diverged run, Ctrl-C or a full disk never loses a finished run; a local run, or a mistyped local path,
makes no network lookup. The runs are tiny (2 steps, a 16-pair dataset folder, 4 samples)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib import compare
from course_lib.loop import training
from course_lib.maths.losses import PAIRWISE_LOSSES, dpo_loss
from course_lib.toyworld.data import load_pairs, local_path_or_hub_id
from course_lib.toyworld.models import load_model_and_tokenizer

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A TRL-format folder of toy pairs (16 train, 8 test): the default toy model can score it."""
    folder = tmp_path / "prefs"
    folder.mkdir()
    for split, n in (("train", 16), ("test", 8)):
        with open(DATA / "preferences" / f"{split}.jsonl") as f:
            rows = [json.loads(line) for line, _ in zip(f, range(n))]
        _write_rows(folder / f"{split}.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    return folder


def _args(dataset: Path, out: Path | None = None, *extra: str) -> list[str]:
    argv = ["--dataset", str(dataset), "--losses", "dpo", "ipo", "--steps", "2", "--eval-samples", "4",
            "--batch-size", "4", "--no-progress", "--device", "cpu", *extra]  # fmt: skip
    return argv + (["--out", str(out)] if out is not None else [])


def _main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = compare.main(argv)
    return code, out.getvalue(), err.getvalue()


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _set_loss(monkeypatch, name: str, fn) -> None:
    """The registry's ``name`` computed by ``fn`` for this test."""
    monkeypatch.setitem(PAIRWISE_LOSSES, name, dataclasses.replace(PAIRWISE_LOSSES[name], fn=fn))


def _at_call(n: int, fault, fn=dpo_loss):
    """``fn``, except that its ``n``-th call returns ``fault(*args, **kwargs)``."""
    calls = {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        return fault(*args, **kwargs) if calls["n"] == n else fn(*args, **kwargs)

    return loss


def _raise(error):
    def fault(*args, **kwargs):
        raise error

    return fault


@pytest.fixture
def no_plots(monkeypatch):
    """The PNGs cost seconds; most tests are about results.json."""
    monkeypatch.setattr(compare, "write_plots", lambda results, out: [])


@pytest.fixture
def no_network(monkeypatch):
    """Fail any DNS lookup, connection or hub download; the list of what was attempted is returned."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for target in ("huggingface_hub.hf_hub_download", "huggingface_hub.snapshot_download", "datasets.load_dataset",
                   "transformers.utils.hub.hf_hub_download", "transformers.utils.hub.snapshot_download"):  # fmt: skip
        monkeypatch.setattr(target, refuse)
    return attempts


# ----------------------------------------------------------------------------- bad usage: before any work
@pytest.fixture
def usage(tmp_path, monkeypatch):
    """Bad usage must be caught before the model is loaded; ``{tmp}`` holds a file, an empty folder, a folder
    with only test.jsonl; the working directory is the repository (``data/reference_modl`` is a typo)."""
    monkeypatch.setattr("course_lib.toyworld.models.load_model_and_tokenizer", _raise(AssertionError("loaded")))
    monkeypatch.chdir(REPO)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_test").mkdir()
    (tmp_path / "only_test" / "test.jsonl").write_text("{}\n")
    yield tmp_path
    assert (tmp_path / "a_file").read_text() == "x"


NO_CUDA = ["--device cuda", "--device cuda:0"] if not torch.cuda.is_available() else []
NO_MPS = ["--device mps"] if not torch.backends.mps.is_available() else []
BAD_USAGE = [  # the options, then (after " | ") what the error says besides the option's name
    *[f"--beta {v}" for v in ("inf", "nan", "-1", "zero", "1e400")], "--beta=-inf",  # (more: test_compare)
    *[f"--lr {v}" for v in ("-1", "nan", "inf", "0", "fast")], *[f"--batch-size {v}" for v in ("0", "-1", "2.5")],
    "--eval-samples 0", "--eval-samples -3", *[f"--steps {v}" for v in ("-5", "1e3")], "--max-train-pairs 0",
    "--max-train-pairs -1", "--seed -1", "--labelling coin", "--device foo", "--device tpu",
    "--device cuda:x", *NO_CUDA, *NO_MPS, "--unknown", "--model data/reference_modl", "--model /no/such/folder",
    "--model {tmp}/empty | it is empty", "--model data/preferences | no config.json", "--dataset {tmp}/a_file",
    "--model {tmp}/a_file | is a file", "--dataset data/preferencs", "--dataset ./no_such_folder",
    "--dataset {tmp}/empty", "--dataset {tmp}/only_test | no train.jsonl", "--out {tmp}/a_file | is a file",
    "--out {tmp}/a_file/sub | cannot be written",
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_USAGE)
def test_bad_options_get_one_line_and_status_2_before_any_work(bad, usage):
    argv, _, said = bad.format(tmp=usage).partition(" | ")
    code, stdout, stderr = _main(argv.split())
    assert code == 2 and stdout == "" and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert argv.split()[0].split("=")[0] in stderr and said in stderr


@pytest.mark.parametrize("value", ["foo", "cuda:x", *(["cuda"] if not torch.cuda.is_available() else [])])
def test_a_wrong_course_device_is_named(value, usage, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", value)
    code, _, stderr = _main([])
    assert code == 2 and "COURSE_DEVICE" in stderr and stderr.count("\n") == 1


def test_help_exits_0(capsys):
    assert compare.main(["--help"]) == 0
    assert "--max-train-pairs" in capsys.readouterr().out


# ----------------------------------------------------------------------------- --dataset contents
PAIR = {"prompt": "the movie was", "chosen": " great fun .", "rejected": " dull ."}
CHAT = {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "fun"}],
        "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "dull"}]}  # fmt: skip
# fmt: off
BAD_ROWS = {  # what: (line, the row, what the error says)
    "malformed JSON": (3, '{"prompt": "the movie was", "chosen": " great"', "malformed JSON"),
    "missing rejected": (2, {"prompt": "the movie was", "chosen": " great ."}, "missing field 'rejected'"),
    "missing chosen": (2, {"prompt": "the movie was", "rejected": " dull ."}, "chosen"),
    "a JSON list": (2, ["the movie was", " great", " dull"], "expected a JSON object"),
    "a number": (2, "7", "expected a JSON object"),
    "same response": (4, {**PAIR, "rejected": " great fun ."}, "chosen and rejected are the same"),
    "same after spaces": (4, {**PAIR, "rejected": "great fun .  "}, "chosen and rejected are the same"),
    "empty chosen": (2, {**PAIR, "chosen": ""}, "chosen"),
    "blank rejected": (2, {**PAIR, "rejected": " "}, "rejected response is empty"),
    "empty prompt": (2, {**PAIR, "prompt": ""}, "prompt"),
    "no shared prompt": (2, {"chosen": "great .", "rejected": "dull ."}, "prompt"),
    "prompt a number": (2, {**PAIR, "prompt": 42}, "'prompt' must be a string or a list of messages"),
    "chosen a number": (2, {**PAIR, "chosen": 1}, "chosen"),
    "null chosen": (2, {**PAIR, "chosen": None}, "chosen"),
    "unknown word": (5, {**PAIR, "rejected": " dull zzyzx ."}, "'zzyzx', which is not a vocabulary word"),
    "no content": (3, {**CHAT, "chosen": [CHAT["chosen"][0], {"role": "assistant"}]},
                   "message 1 needs a string 'content'"),
    "message not a dict": (3, {**CHAT, "chosen": [CHAT["chosen"][0], "oops"]}, "message 1"),
    "text and messages": (2, {**PAIR, "rejected": CHAT["rejected"][1:]}, "rejected"),
    "too long": (2, {**PAIR, "chosen": " great" * 40}, "prompt + chosen is 44 tokens long"),
}
# fmt: on


@pytest.mark.parametrize("what", BAD_ROWS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_a_bad_row_is_named_by_file_and_line(dataset, what, split):
    line, row, said = BAD_ROWS[what]
    rows = (dataset / f"{split}.jsonl").read_text().splitlines()
    rows[line - 1] = row if isinstance(row, str) else json.dumps(row)
    _write_rows(dataset / f"{split}.jsonl", rows)
    code, _, stderr = _main(_args(dataset))
    assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert f"{split}.jsonl, line {line}" in stderr and said in stderr


def test_empty_files_files_not_in_utf8_and_too_few_pairs(dataset):
    (dataset / "test.jsonl").write_text("")
    code, _, stderr = _main(_args(dataset))
    assert code == 2 and "test.jsonl contains no records" in stderr
    (dataset / "test.jsonl").write_bytes(b'{"prompt": "the movie was"}\n{"prompt": "caf\xe9"}\n')
    code, _, stderr = _main(_args(dataset))
    assert code == 2 and "test.jsonl, line 2: not UTF-8" in stderr
    (dataset / "test.jsonl").unlink()
    train, test = load_pairs(str(dataset), "deterministic")
    assert (len(train), len(test)) == (15, 1)  # no test split: the last tenth is held out
    _write_rows(dataset / "train.jsonl", [PAIR])
    code, _, stderr = _main(_args(dataset))
    assert code == 2 and "nothing to hold out" in stderr and stderr.count("\n") == 1


def test_max_train_pairs_takes_the_first_n(dataset, monkeypatch, no_plots):
    seen, original = [], training.train_preference

    def spy(policy, reference, pairs, **kwargs):
        seen.append(len(pairs))
        return original(policy, reference, pairs, **kwargs)

    monkeypatch.setattr(training, "train_preference", spy)
    assert _main([*_args(dataset), "--losses", "dpo", "--max-train-pairs", "5"])[0] == 0
    assert seen == [5]


# ----------------------------------------------------------------------------- faults: what is done is kept
def test_results_are_written_after_every_run_and_a_crash_keeps_them(dataset, tmp_path, monkeypatch, no_plots):
    out, seen = tmp_path / "out", {}

    def ipo_that_looks_at_the_file(*args, **kwargs):
        seen.setdefault("first", _results(out))
        raise RuntimeError("CUDA out of memory (simulated)")

    _set_loss(monkeypatch, "ipo", ipo_that_looks_at_the_file)
    with pytest.raises(RuntimeError, match="simulated"):
        _main(_args(dataset, out))
    assert [run["loss"] for run in seen["first"]["runs"]] == ["dpo"]  # on disk while IPO trained
    [run] = _results(out)["runs"]
    assert run["loss"] == "dpo" and len(run["history"]) == 2 and not run["interrupted"]


def test_a_diverged_run_is_kept_marked_and_the_others_go_on(dataset, tmp_path, monkeypatch, no_plots):
    out = tmp_path / "out"
    _set_loss(monkeypatch, "dpo", _at_call(2, lambda *a, **k: dpo_loss(*a, **k) * float("nan")))
    code, stdout, stderr = _main(_args(dataset, out))
    assert code == 1
    dpo, ipo = _results(out)["runs"]
    assert "nan at step 2" in dpo["failed"] and len(dpo["history"]) == 1 and dpo["eval"]["eval_step"] == 1
    assert "failed" not in ipo and len(ipo["history"]) == 2
    assert "failed after step 1" in stdout and "dpo (beta=0.5) failed" in stderr


@pytest.mark.parametrize("step", [1, 2])
def test_one_ctrl_c_stops_everything_and_keeps_what_is_done(dataset, tmp_path, monkeypatch, step):
    out = tmp_path / "out"
    _set_loss(monkeypatch, "dpo", _at_call(step, _raise(KeyboardInterrupt)))
    code, stdout, stderr = _main(_args(dataset, out))  # real plots: interrupted runs must plot too
    assert code == 130 and "Traceback" not in stderr and "interrupted" in stdout
    results = _results(out)
    assert results["interrupted"] is True
    assert [(r["loss"], len(r["history"]), r["interrupted"]) for r in results["runs"]] == [("dpo", step - 1, True)]
    assert (out / "margin_and_kl.png").stat().st_size > 0 and (out / "reward_vs_kl.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    if step == 2:
        assert results["runs"][0]["eval"]["eval_step"] == 1 and results["runs"][0]["eval"]["kl"] is not None
        assert "interrupted after step 1" in stdout


def test_ctrl_c_in_the_reference_precompute_of_the_second_run(dataset, tmp_path, monkeypatch, no_plots):
    out, state = tmp_path / "out", {"runs": 0}
    original_train, original_scoring = training.train_preference, training.response_logps

    def counting_train(*args, **kwargs):
        state["runs"] += 1
        return original_train(*args, **kwargs)

    def ctrl_c_in_precompute(model, batch, **kwargs):
        if state["runs"] == 2 and not torch.is_grad_enabled():
            raise KeyboardInterrupt
        return original_scoring(model, batch, **kwargs)

    monkeypatch.setattr(training, "train_preference", counting_train)
    monkeypatch.setattr(training, "response_logps", ctrl_c_in_precompute)
    code, stdout, stderr = _main(_args(dataset, out))
    assert code == 130 and "Traceback" not in stderr and "ipo (beta=0.5) had not taken a step" in stderr
    assert _results(out)["interrupted"] is True
    assert [(r["loss"], len(r["history"]), r["interrupted"]) for r in _results(out)["runs"]] == [("dpo", 2, False)]


@pytest.mark.parametrize("where", ["final evaluation", "loading"])
def test_ctrl_c_in_the_final_evaluation_or_while_loading(dataset, tmp_path, monkeypatch, no_plots, where):
    out = tmp_path / "out"
    target = {"final evaluation": "sampling.sample_responses", "loading": "models.load_model_and_tokenizer"}[where]
    monkeypatch.setattr(f"course_lib.toyworld.{target}", _raise(KeyboardInterrupt))  # compare's own samples only
    code, _, stderr = _main(_args(dataset, out))
    assert code == 130 and "Traceback" not in stderr
    if where == "loading":
        assert "nothing written" in stderr and not (out / "results.json").exists()
    else:
        [run] = _results(out)["runs"]
        assert run["interrupted"] and len(run["history"]) == 2 and run["eval"]["eval_step"] == 2


def test_a_failed_write_leaves_the_previous_files_whole(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _main([*_args(dataset, out), "--losses", "dpo"])[0] == 0
    before = {name: (out / name).read_bytes() for name in ("results.json", "margin_and_kl.png", "reward_vs_kl.png")}

    def broken_savefig(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    for target, fault, kept in (("os.fsync", _raise(OSError(28, "No space left on device")), before),
                                ("matplotlib.figure.Figure.savefig", broken_savefig, list(before)[1:])):  # fmt: skip
        with monkeypatch.context() as patch:
            patch.setattr(target, fault)
            code, _, stderr = _main([*_args(dataset, out, "--seed", "1"), "--losses", "dpo"])
        assert code == 1 and "No space left" in stderr and "Traceback" not in stderr
        assert all((out / name).read_bytes() == before[name] for name in kept)  # a failed fsync: no file changed
        assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary file left


WRAPPER = """
import os, resource, signal, sys
from course_lib import compare
from course_lib.maths.losses import PAIRWISE_LOSSES
if sys.argv[1] == "sigint":  # a real Ctrl-C at the second step, through Python's own handler
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a pytest-xdist worker's children inherit SIG_IGN
    spec, calls = PAIRWISE_LOSSES["dpo"], []
    def loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return spec.fn(*args, **kwargs)
    PAIRWISE_LOSSES["dpo"] = type(spec)(spec.name, loss, spec.average_logps, spec.needs_reference)
else:  # a real file-size limit: a full disk's stand-in
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
sys.exit(compare.main(sys.argv[2:]))
"""


def test_a_real_sigint_and_a_real_file_size_limit_in_a_child_process(dataset, tmp_path):
    out, script = tmp_path / "out", tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def child(mode, *extra):
        command = [sys.executable, str(script), mode, *_args(dataset, out, *extra)]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=REPO)

    done = child("sigint")
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr[-500:]
    before = (out / "results.json").read_bytes()
    assert [(r["loss"], len(r["history"]), r["interrupted"]) for r in json.loads(before)["runs"]] == [("dpo", 1, True)]
    done = child("fsize", "--seed", "3")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-500:]
    assert (out / "results.json").read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- local paths and the network
def test_a_local_run_makes_no_network_lookup(dataset, tmp_path, no_network, no_plots):
    model = Path(shutil.copytree(DATA / "reference_model", tmp_path / "model"))
    code, _, stderr = _main([*_args(dataset, tmp_path / "out"), "--model", str(model), "--losses", "dpo"])
    assert code == 0, stderr
    assert no_network == []


@pytest.mark.parametrize(
    "option, name", [("--dataset", "my_data/nope"), ("--model", "my_models/tiny_modl"), ("--model", "tiny_modl")]
)
def test_a_mistyped_local_folder_is_named_without_a_hub_lookup(option, name, tmp_path, monkeypatch, no_network):
    for folder in ("my_data", "my_models/tiny_model", "tiny_model"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _main([option, name, "--no-progress"])
    assert code == 2 and stderr.count("\n") == 1 and f"{option} {name!r}" in stderr
    assert "does not exist" in stderr and "huggingface.co" not in stderr  # the library's message, not the hub's
    assert no_network == []


@pytest.mark.parametrize("name", ["data/reference_modl", "./reference_modl", "data/preferences/nope", "~/no_such"])
def test_a_mistyped_local_path_fails_at_once_without_the_network(name, no_network, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_and_tokenizer(name)
    assert no_network == []


def test_a_hub_id_is_still_a_hub_id():
    for name in ("gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "trl-lib/ultrafeedback_binarized"):
        assert local_path_or_hub_id(name, "model") == name
    assert local_path_or_hub_id(str(DATA / "reference_model"), "model") == DATA / "reference_model"
    assert isinstance(local_path_or_hub_id(Path("data"), "model"), Path)
