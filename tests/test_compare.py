"""Tests of the headless comparison ``python -m course_lib.compare``, run in-process through ``main``."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from course_lib import ipo_optimal_margins
from course_lib.compare import main
from course_lib.maths.losses import PAIRWISE_LOSSES, LossSpec, dpo_loss
from course_lib.toyworld.data import load_preferences

DATA = Path(__file__).resolve().parent.parent / "data"
SMALL = [
    "--steps",
    "2",
    "--eval-samples",
    "16",
    "--batch-size",
    "8",
    "--max-train-pairs",
    "64",
    "--no-progress",
    "--device",
    "cpu",
]
EVAL_KEYS = {"preference_accuracy", "kl", "kl_stderr", "reward", "reward_stderr"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _main(argv: list[str]) -> tuple[int, str, str]:
    """Runs ``main(argv)``; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """The default comparison (DPO, IPO, RRHF on the toy data), run twice with the same seed."""
    runs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name)
        code, stdout, _ = _main([*SMALL, "--seed", "1", "--out", str(out)])
        assert code == 0
        runs.append({"out": out, "stdout": stdout})
    return runs


def _keys_anywhere(value) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(_keys_anywhere(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys_anywhere(v) for v in value))
    return set()


def test_prints_the_table(default_runs):
    stdout = default_runs[0]["stdout"]
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("loss"))
    for column in ("beta", "final loss", "pref acc", "KL", "true reward", "margin", "Eq. 11"):
        assert column in lines[header]
    rows = [line.split() for line in lines[header + 2 : header + 5]]
    assert [row[0] for row in rows] == ["dpo", "ipo", "rrhf"]
    assert [row[-1] == "-" for row in rows] == [True, False, True]  # the Eq. 11 optimum is IPO's alone
    assert "results.json" in stdout


def test_results_json_schema(default_runs):
    results = json.loads((default_runs[0]["out"] / "results.json").read_text())
    assert [run["loss"] for run in results["runs"]] == ["dpo", "ipo", "rrhf"]
    for run in results["runs"]:
        assert {"loss", "beta", "length_normalize", "steps", "seed", "history", "eval"} <= set(run)
        assert run["beta"] == (None if run["loss"] == "rrhf" else 0.5)
        assert run["length_normalize"] is (run["loss"] != "dpo")  # IPO and RRHF average log-probs
        assert run["steps"] == 2 and run["seed"] == 1
        if run["loss"] == "ipo":  # Eq. 11's mean optimal margin over the 64 training pairs used, at beta = 0.5
            expected = ipo_optimal_margins(load_preferences("train")[:64], beta=0.5).mean().item()
            assert run["eq11_margin"] == pytest.approx(expected)
        else:
            assert run["eq11_margin"] is None
        assert [entry["step"] for entry in run["history"]] == [1, 2]
        for entry in run["history"]:
            assert isinstance(entry["loss"], float)
            if run["loss"] != "rrhf":
                assert isinstance(entry["margin"], float)
        assert set(run["eval"]) >= EVAL_KEYS
        assert all(isinstance(run["eval"][k], float) for k in EVAL_KEYS)
        assert run["eval"]["kl"] > 0 and run["eval"]["kl_stderr"] > 0
    assert not any("time" in key or "second" in key for key in _keys_anywhere(results))


def test_same_seed_writes_identical_results(default_runs):
    first, second = (run["out"] / "results.json" for run in default_runs)
    assert first.read_bytes() == second.read_bytes()


def test_writes_non_empty_pngs(default_runs):
    pngs = sorted(default_runs[0]["out"].glob("*.png"))
    assert [p.name for p in pngs] == ["margin_and_kl.png", "reward_vs_kl.png"]
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_model_from_a_local_folder(tmp_path):
    model = shutil.copytree(DATA / "reference_model", tmp_path / "my_model")
    code, stdout, _ = _main(
        [*SMALL, "--steps", "1", "--losses", "dpo", "--model", str(model), "--out", str(tmp_path / "out")]
    )
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["model"] == str(model)
    assert [run["loss"] for run in results["runs"]] == ["dpo"]
    assert results["runs"][0]["eval"]["reward"] is None  # not the toy model: no true reward
    assert "dpo" in stdout


def test_dataset_from_a_local_folder_in_trl_format(tmp_path):
    folder = tmp_path / "my_data"
    folder.mkdir()
    for split, pairs in (("train", load_preferences("train")[:32]), ("test", load_preferences("test")[:16])):
        with open(folder / f"{split}.jsonl", "w") as f:
            for p in pairs:
                f.write(json.dumps({"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}) + "\n")
    code, stdout, stderr = _main(
        [*SMALL, "--steps", "1", "--losses", "dpo", "rrhf", "--dataset", str(folder), "--out", str(tmp_path / "out")]
    )
    assert code == 0
    assert "rrhf skipped" in stderr  # RRHF needs ranked candidate sets
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["dataset"] == str(folder)
    [run] = results["runs"]
    assert run["loss"] == "dpo" and len(run["history"]) == 1
    assert isinstance(run["eval"]["preference_accuracy"], float) and run["eval"]["reward"] is None


@pytest.mark.parametrize("bad", [["--beta", "0"], ["--beta", "0.5", "-1"], ["--steps", "0"], ["--losses", "ppo"]])
def test_bad_arguments_exit_cleanly(bad, capsys):
    assert main(bad) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "Traceback" not in stderr  # one line, naming the option
    assert bad[0] in stderr


def test_a_loss_added_to_the_registry_is_a_choice_and_trains(monkeypatch, tmp_path):
    """--losses reads PAIRWISE_LOSSES: a new entry (reference-free, averaged log-probs) runs with no change here."""

    def free_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta):
        assert ref_chosen_logps is None and ref_rejected_logps is None
        return dpo_loss(policy_chosen_logps, policy_rejected_logps, 0 * policy_chosen_logps, 0 * policy_chosen_logps)

    monkeypatch.setitem(PAIRWISE_LOSSES, "free", LossSpec("free", free_loss, average_logps=True, needs_reference=False))
    code, stdout, _ = _main([*SMALL, "--losses", "free", "--out", str(tmp_path)])
    [run] = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert code == 0 and run["loss"] == "free" and run["length_normalize"] is True and "free" in stdout
