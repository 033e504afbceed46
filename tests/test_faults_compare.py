"""``python -m course_lib.compare`` under faults (issue 12), run in-process through ``main``.

Items covered: 3 (``--out`` checked first; ``results.json`` written after every run), 4 (atomic writes:
a failed write leaves the previous file whole), 6 (one Ctrl-C stops everything, keeps what is done, exit
status 130, the table marks the run; Ctrl-C during the reference precompute, the final evaluation or the
model load), 12 (``--max-train-pairs`` 0 or -1), 13 (``chosen == rejected``), 15 (``--dataset DIR`` errors
name the file and the line), 16 (pairs longer than the model's context), 18 (bad options: one line naming
the option, exit status 2, before any work), 20 (a local run makes no network lookup), 21 (a mistyped local
path fails at once).

The runs are tiny (2 steps, a 16-pair dataset folder, 4 samples); the plots are stubbed out except where a
test is about them.
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
import torch

from course_lib import compare
from course_lib.loop import training
from course_lib.maths.losses import PAIRWISE_LOSSES, dpo_loss

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_rows(split: str, n: int) -> list[dict]:
    with open(DATA / "preferences" / f"{split}.jsonl") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(n))]
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]


def _write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A TRL-format folder of toy pairs (16 train, 8 test): the default toy model can score it."""
    folder = tmp_path / "prefs"
    folder.mkdir()
    _write_rows(folder / "train.jsonl", _toy_rows("train", 16))
    _write_rows(folder / "test.jsonl", _toy_rows("test", 8))
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


@pytest.fixture
def no_plots(monkeypatch):
    """The PNGs cost seconds; most tests are about results.json."""
    monkeypatch.setattr(compare, "write_plots", lambda results, out: [])


@pytest.fixture
def no_loading(monkeypatch):
    """Bad usage must be caught before the model is loaded."""

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr("course_lib.toyworld.models.load_model_and_tokenizer", must_not_load)


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# ----------------------------------------------------------------------------- item 18, 12, 21: bad usage
BAD_USAGE = [
    (["--beta", "inf"], "--beta"),
    (["--beta", "nan"], "--beta"),
    (["--beta=-inf"], "--beta"),
    (["--beta", "zero"], "--beta"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--batch-size", "2.5"], "--batch-size"),
    (["--eval-samples", "0"], "--eval-samples"),
    (["--steps", "0"], "--steps"),
    (["--max-train-pairs", "0"], "--max-train-pairs"),
    (["--max-train-pairs", "-1"], "--max-train-pairs"),
    (["--seed", "-1"], "--seed"),
    (["--device", "foo"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--model", "data/reference_modl"], "--model"),
    (["--model", "/no/such/folder"], "--model"),
    (["--dataset", "data/preferencs"], "--dataset"),
    (["--dataset", "./no_such_folder"], "--dataset"),
    (["--losses", "ppo"], "--losses"),
]


@pytest.mark.parametrize("bad, option", BAD_USAGE, ids=[" ".join(b) for b, _ in BAD_USAGE])
def test_bad_options_get_one_line_and_status_2_before_any_work(bad, option, no_loading, monkeypatch):
    monkeypatch.chdir(REPO)  # so that data/reference_modl is a typo next to an existing data/
    code, stdout, stderr = _main([*bad, "--no-progress"])
    assert code == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert option in stderr and stdout == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("how", ["option", "environment"])
def test_cuda_on_a_machine_without_it(how, no_loading, monkeypatch):
    if how == "option":
        argv, named = ["--device", "cuda"], "--device"
    else:
        monkeypatch.setenv("COURSE_DEVICE", "cuda")
        argv, named = [], "COURSE_DEVICE"
    code, _, stderr = _main(argv)
    assert code == 2 and stderr.count("\n") == 1 and named in stderr and "cuda" in stderr


def test_a_wrong_course_device_is_named(no_loading, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "foo")
    code, _, stderr = _main([])
    assert code == 2 and "COURSE_DEVICE" in stderr and stderr.count("\n") == 1


def test_model_folders_that_hold_no_model(tmp_path, no_loading):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, said in ((empty, "it is empty"), (DATA / "preferences", "no config.json")):
        code, _, stderr = _main(["--model", str(folder)])
        assert code == 2 and "--model" in stderr and said in stderr and stderr.count("\n") == 1
    code, _, stderr = _main(["--model", str(DATA / "README.md")])
    assert code == 2 and "is a file" in stderr


def test_a_dataset_folder_without_train_jsonl(tmp_path, dataset, no_loading):
    (dataset / "train.jsonl").unlink()
    code, _, stderr = _main(["--dataset", str(dataset)])
    assert code == 2 and "no train.jsonl" in stderr and "test.jsonl" in stderr and stderr.count("\n") == 1


def test_out_is_checked_first(tmp_path, no_loading):
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    for out, said in ((a_file, "is a file"), (a_file / "sub", "cannot be written")):
        code, _, stderr = _main(["--out", str(out)])
        assert code == 2 and "--out" in stderr and said in stderr and stderr.count("\n") == 1
    assert a_file.read_text() == "not a folder"


def test_help_exits_0(capsys):
    assert compare.main(["--help"]) == 0
    assert "--max-train-pairs" in capsys.readouterr().out


# ----------------------------------------------------------------------------- items 13, 15, 16: --dataset contents
PAIR = {"prompt": "the movie was", "chosen": " great fun .", "rejected": " dull ."}
BAD_ROWS = [
    ("malformed JSON", 3, '{"prompt": "the movie was", "chosen": " great"', "malformed JSON"),
    ("missing field", 2, {"prompt": "the movie was", "chosen": " great ."}, "missing field 'rejected'"),
    ("a JSON list", 2, ["the movie was", " great", " dull"], "expected a JSON object"),
    ("same response", 4, {**PAIR, "rejected": " great fun ."}, "chosen and rejected are the same"),
    ("empty response", 2, {**PAIR, "chosen": " "}, "chosen response is empty"),
    ("unknown word", 5, {**PAIR, "rejected": " dull zzyzx ."}, "'zzyzx', which is not a vocabulary word"),
    ("prompt not text", 2, {**PAIR, "prompt": 42}, "'prompt' must be a string or a list of messages"),
    (
        "no content",
        3,
        {
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "dull"}],
        },
        "message 1 needs a string 'content'",
    ),  # fmt: skip
    ("too long", 2, {**PAIR, "chosen": " great" * 40}, "prompt + chosen is 44 tokens long"),
]


@pytest.mark.parametrize("what, line, row, said", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
@pytest.mark.parametrize("split", ["train", "test"])
def test_a_bad_row_is_named_by_file_and_line(dataset, what, line, row, said, split):
    path = dataset / f"{split}.jsonl"
    rows = path.read_text().splitlines()
    rows[line - 1] = row if isinstance(row, str) else json.dumps(row)
    _write_rows(path, rows)
    code, _, stderr = _main(_args(dataset))
    assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert f"{split}.jsonl, line {line}" in stderr and said in stderr


def test_an_empty_file_and_a_file_that_is_not_utf8(dataset):
    (dataset / "test.jsonl").write_text("")
    code, _, stderr = _main(_args(dataset))
    assert code == 2 and "test.jsonl contains no records" in stderr
    (dataset / "test.jsonl").write_bytes(b'{"prompt": "the movie was"}\n{"prompt": "caf\xe9"}\n')
    code, _, stderr = _main(_args(dataset))
    assert code == 2 and "test.jsonl, line 2: not UTF-8" in stderr


def test_a_folder_with_only_a_train_split_holds_the_last_tenth_out(dataset):
    (dataset / "test.jsonl").unlink()
    train, test = compare.load_pairs(str(dataset), "deterministic")
    assert (len(train), len(test)) == (15, 1)


def test_max_train_pairs_takes_the_first_n(dataset, monkeypatch, no_plots, tmp_path):
    seen = []
    original = training.train_preference

    def spy(policy, reference, pairs, **kwargs):
        seen.append(len(pairs))
        return original(policy, reference, pairs, **kwargs)

    monkeypatch.setattr(training, "train_preference", spy)
    assert _main([*_args(dataset), "--losses", "dpo", "--max-train-pairs", "5"])[0] == 0
    assert seen == [5]


# ----------------------------------------------------------------------------- item 3: written as soon as each run ends
def test_results_are_written_after_every_run(dataset, tmp_path, monkeypatch, no_plots):
    out = tmp_path / "out"
    seen = {}

    def ipo_that_looks_at_the_file(*args, **kwargs):
        if "first" not in seen:
            seen["first"] = _results(out)
        return PAIRWISE_LOSSES_ORIGINAL["ipo"](*args, **kwargs)

    monkeypatch.setitem(PAIRWISE_LOSSES, "ipo", ipo_that_looks_at_the_file)
    assert _main(_args(dataset, out))[0] == 0
    assert [run["loss"] for run in seen["first"]["runs"]] == ["dpo"]  # on disk while IPO trained
    assert [run["loss"] for run in _results(out)["runs"]] == ["dpo", "ipo"]


PAIRWISE_LOSSES_ORIGINAL = dict(PAIRWISE_LOSSES)


def test_a_crash_in_the_second_run_keeps_the_first(dataset, tmp_path, monkeypatch, no_plots):
    out = tmp_path / "out"

    def crashes(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setitem(PAIRWISE_LOSSES, "ipo", crashes)
    with pytest.raises(RuntimeError, match="simulated"):
        _main(_args(dataset, out))
    [run] = _results(out)["runs"]
    assert run["loss"] == "dpo" and len(run["history"]) == 2 and not run["interrupted"]


def test_a_diverged_run_is_kept_marked_and_the_others_go_on(dataset, tmp_path, monkeypatch, no_plots):
    out = tmp_path / "out"
    calls = {"n": 0}

    def nan_at_step_2(*args, **kwargs):
        calls["n"] += 1
        loss = dpo_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setitem(PAIRWISE_LOSSES, "dpo", nan_at_step_2)
    code, stdout, stderr = _main(_args(dataset, out))
    assert code == 1
    dpo, ipo = _results(out)["runs"]
    assert "nan at step 2" in dpo["failed"] and len(dpo["history"]) == 1 and dpo["eval"]["eval_step"] == 1
    assert "failed" not in ipo and len(ipo["history"]) == 2
    assert "failed after step 1" in stdout and "dpo (beta=0.5) failed" in stderr


# ----------------------------------------------------------------------------- item 6: Ctrl-C
def test_one_ctrl_c_stops_everything_and_keeps_what_is_done(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = {"n": 0}

    def ctrl_c_at_step_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return dpo_loss(*args, **kwargs)

    monkeypatch.setitem(PAIRWISE_LOSSES, "dpo", ctrl_c_at_step_2)
    code, stdout, stderr = _main(_args(dataset, out))  # real plots: interrupted runs must plot too
    assert code == 130 and "Traceback" not in stderr
    results = _results(out)
    assert results["interrupted"] is True
    [run] = results["runs"]  # IPO never started
    assert run["loss"] == "dpo" and run["interrupted"] and len(run["history"]) == 1
    assert run["eval"]["eval_step"] == 1 and run["eval"]["kl"] is not None
    assert "interrupted after step 1" in stdout
    assert (out / "margin_and_kl.png").stat().st_size > 0 and (out / "reward_vs_kl.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_ctrl_c_in_the_reference_precompute_of_the_second_run(dataset, tmp_path, monkeypatch, no_plots):
    out = tmp_path / "out"
    original_train, original_scoring = training.train_preference, training.response_logps
    state = {"runs": 0}

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
    results = _results(out)
    assert results["interrupted"] is True
    [run] = results["runs"]
    assert run["loss"] == "dpo" and not run["interrupted"] and len(run["history"]) == 2
    assert "dpo" in stdout


def test_ctrl_c_in_the_final_evaluation(dataset, tmp_path, monkeypatch, no_plots):
    out = tmp_path / "out"

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("course_lib.toyworld.sampling.sample_responses", ctrl_c)  # compare's own samples only
    code, _, stderr = _main(_args(dataset, out))
    assert code == 130 and "Traceback" not in stderr
    [run] = _results(out)["runs"]
    assert run["interrupted"] and len(run["history"]) == 2 and run["eval"]["eval_step"] == 2


def test_ctrl_c_while_loading_writes_nothing(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("course_lib.toyworld.models.load_model_and_tokenizer", ctrl_c)
    code, stdout, stderr = _main(_args(dataset, out))
    assert code == 130 and "Traceback" not in stderr and "nothing written" in stderr
    assert not (out / "results.json").exists()


# ----------------------------------------------------------------------------- item 4: atomic writes
def test_a_failed_write_leaves_the_previous_results_whole(dataset, tmp_path, monkeypatch, no_plots):
    out = tmp_path / "out"
    assert _main(_args(dataset, out))[0] == 0
    before = (out / "results.json").read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    code, _, stderr = _main(_args(dataset, out, "--seed", "1"))
    assert code == 1 and "No space left" in stderr and stderr.count("Traceback") == 0
    assert (out / "results.json").read_bytes() == before  # still the first run's valid file
    json.loads(before)
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_plots_are_moved_into_place_whole(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _main([*_args(dataset, out), "--losses", "dpo"])[0] == 0
    before = {name: (out / name).read_bytes() for name in ("margin_and_kl.png", "reward_vs_kl.png")}

    def broken_savefig(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken_savefig)
    code, _, stderr = _main([*_args(dataset, out, "--seed", "1"), "--losses", "dpo"])
    assert code == 1 and "No space left" in stderr
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- item 20: no network for local runs
def test_a_local_run_makes_no_network_lookup(dataset, tmp_path, monkeypatch, no_plots):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("datasets.load_dataset", lambda *a, **k: pytest.fail("datasets was asked to load"))
    model = Path(shutil.copytree(DATA / "reference_model", tmp_path / "model"))
    code, _, stderr = _main([*_args(dataset, tmp_path / "out"), "--model", str(model), "--losses", "dpo"])
    assert code == 0, stderr
    assert attempts == []
