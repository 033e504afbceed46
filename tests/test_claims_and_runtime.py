"""The chapter's claims (asserted bounds on run figures, with a calibration log) and its runtime settings
(COURSE_SEED, one intra-op thread for tiny models on the CPU)."""

import json
import math

import pytest
import torch

from course_lib.teaching.claims import ClaimError, claim, claim_margin
from course_lib.toyworld.runtime import TINY_MODEL_PARAMETERS, course_seed, is_tiny_cpu_model, tiny_model_threads


# --- claims ------------------------------------------------------------------------------------------
def test_claim_holds_inside_its_bounds_and_returns_nothing_a_notebook_would_display():
    assert claim("in range", 0.5, above=0.1, below=0.9) is None  # a cell ending in claim(...) shows no value
    claim("a tensor figure", torch.tensor(2.0), above=1.0)


@pytest.mark.parametrize(
    ("value", "above", "below"),
    [(0.05, 0.1, None), (1.0, None, 0.9), (0.1, 0.1, None), (math.nan, 0.0, None), (math.inf, None, 1.0)],
)
def test_claim_raises_outside_its_bounds_naming_the_statement(value, above, below):
    with pytest.raises(ClaimError, match="IPO's margin levels off"):
        claim("IPO's margin levels off", value, above=above, below=below)


def test_claim_margin_is_the_distance_to_the_nearer_bound():
    assert claim_margin(0.3, above=0.1, below=0.9) == pytest.approx(0.2)
    assert claim_margin(0.8, above=0.1, below=0.9) == pytest.approx(0.1)
    assert claim_margin(-1.0, above=0.0) == -1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"statement": "", "value": 1.0, "above": 0.0}, "statement"),
        ({"statement": "x", "value": 1.0}, "bound"),
        ({"statement": "x", "value": 1.0, "above": math.nan}, "above"),
    ],
)
def test_claim_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        claim(**kwargs)


def test_claims_are_logged_and_calibration_records_failures_without_raising(tmp_path, monkeypatch):
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv("COURSE_CLAIMS_LOG", str(log))
    claim("holds", 2.0, above=1.0)
    with pytest.raises(ClaimError):
        claim("fails", 0.0, above=1.0)
    monkeypatch.setenv("COURSE_CLAIMS_CALIBRATE", "1")
    claim("fails, recorded", 0.0, above=1.0)  # recorded, not raised
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["statement"], r["held"], r["margin"]) for r in records] == [
        ("holds", True, 1.0),
        ("fails", False, -1.0),
        ("fails, recorded", False, -1.0),
    ]


# --- COURSE_SEED ---------------------------------------------------------------------------------------
def test_course_seed_defaults_to_zero_and_reads_the_variable(monkeypatch):
    monkeypatch.delenv("COURSE_SEED", raising=False)
    assert course_seed() == 0
    monkeypatch.setenv("COURSE_SEED", " 3 ")
    assert course_seed() == 3


@pytest.mark.parametrize("raw", ["-1", "one", "1.5"])
def test_course_seed_names_the_variable_when_it_is_not_a_seed(monkeypatch, raw):
    monkeypatch.setenv("COURSE_SEED", raw)
    with pytest.raises(ValueError, match="COURSE_SEED"):
        course_seed()


# --- threads -------------------------------------------------------------------------------------------
def test_a_tiny_cpu_model_runs_on_one_thread_and_the_count_is_restored():
    tiny = torch.nn.Linear(4, 4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with tiny_model_threads(tiny):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), tiny_model_threads(tiny):
            raise RuntimeError("the block failed")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_large_model_keeps_torchs_threads():
    large = torch.nn.Embedding(TINY_MODEL_PARAMETERS // 8 + 1, 8, device="meta")  # no memory: meta device
    assert not is_tiny_cpu_model(large)
    small_on_meta = torch.nn.Linear(2, 2, device="meta")
    assert not is_tiny_cpu_model(small_on_meta)  # not on the CPU
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with tiny_model_threads(torch.nn.Linear(2, 2), large):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
