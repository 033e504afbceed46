"""Tests of the toy world: reward, tokenizer, reference model, sampling, data files and loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from course_lib.build_data import build
from course_lib.toyworld import data as D
from course_lib.toyworld.batching import encode_prompt_response
from course_lib.toyworld.models import build_tokenizer, load_model_and_tokenizer
from course_lib.toyworld.sampling import sample_responses
from course_lib.toyworld.task import PROMPTS, VOCAB, true_reward, true_rewards

DATA = Path(__file__).resolve().parent.parent / "data"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ref():
    return load_model_and_tokenizer(DATA / "reference_model")


@pytest.fixture
def data_copy(tmp_path):
    """A private copy of the committed data folder, safe to corrupt."""
    return Path(shutil.copytree(DATA, tmp_path / "data"))


def _edit_line(path: Path, lineno: int, new_line: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[lineno - 1] = new_line + "\n"
    path.write_text("".join(lines), encoding="utf-8")


# ----------------------------------------------------------------------------- reward
def test_true_reward_closed_form():
    assert true_reward("great fun .") == 2.0
    assert true_reward("great") == 1.0
    assert true_reward("great great great") == 0.0  # distinct sentiment counted once, 2 repeats cost 1.0
    assert true_reward("dull but fun .") == 0.0
    assert true_reward("boring and awful .") == -2.0
    assert true_reward("the plot was") == 0.0
    # 13 tokens: 3 distinct negatives, one repeat ("so"), 5 tokens beyond 8
    assert true_reward("a bit too slow and so so dull . the pacing was weak") == pytest.approx(-3 - 0.5 - 0.5)
    assert true_reward("  great   fun  ") == 2.0  # whitespace-insensitive, as TRL's leading space
    r = true_rewards(["great", "bad bad", "."])
    assert r.dtype == torch.float32 and r.tolist() == [1.0, -1.5, 0.0]


# ----------------------------------------------------------------------------- tokenizer / batching
def test_tokenizer_roundtrip_and_from_pretrained():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(DATA / "reference_model"))
    model = AutoModelForCausalLM.from_pretrained(str(DATA / "reference_model"))
    review = "the acting was really great but a bit slow ."
    ids = tok(review)["input_ids"]
    assert tok.unk_token_id not in ids and len(ids) == len(review.split())
    assert tok.decode(ids) == review
    assert (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) == (0, 1, 2) and tok.padding_side == "right"
    assert tok.get_vocab() == build_tokenizer().get_vocab()
    assert model.config.vocab_size == len(tok) == len(VOCAB) + 3
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 2_000_000


def test_encode_prompt_response_masks_prompt_and_padding():
    tok = build_tokenizer()
    prompts, responses = ["the movie was", "i thought the acting was"], ["great .", "dull"]
    before = (list(prompts), list(responses))
    b = encode_prompt_response(tok, prompts, responses)
    assert (prompts, responses) == before
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (2, 7)
    assert b["input_ids"].dtype == b["labels"].dtype == torch.long
    row0 = tok.convert_ids_to_tokens(b["input_ids"][0].tolist())
    assert row0 == ["the", "movie", "was", "great", ".", "<eos>", "<pad>"]
    assert b["labels"][0].tolist()[:3] == [-100] * 3 and b["labels"][0, -1] == -100
    assert b["labels"][0, 3:6].tolist() == b["input_ids"][0, 3:6].tolist()
    assert b["labels"][1].tolist() == [-100] * 5 + [tok.convert_tokens_to_ids("dull"), tok.eos_token_id]
    assert b["attention_mask"].tolist() == [[1] * 6 + [0], [1] * 7]
    with pytest.raises(ValueError, match="'superduper'"):
        encode_prompt_response(tok, ["the movie was"], ["superduper ."])
    with pytest.raises(ValueError, match="empty"):
        encode_prompt_response(tok, ["the movie was"], ["  "])
    with pytest.raises(ValueError, match="<eos>"):
        encode_prompt_response(tok, ["the movie was"], ["great <eos>"])


# ----------------------------------------------------------------------------- model / sampling
def test_load_model_and_tokenizer(ref, tmp_path):
    model, tok = ref
    assert not model.training
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model_and_tokenizer(tmp_path / "nowhere")


def test_sampling_is_deterministic_given_the_generator(ref):
    model, tok = ref
    prompts = list(PROMPTS[:8]) * 2
    a = sample_responses(model, tok, prompts, generator=torch.Generator().manual_seed(3))
    b = sample_responses(model, tok, prompts, generator=torch.Generator().manual_seed(3))
    c = sample_responses(model, tok, prompts, generator=torch.Generator().manual_seed(4))
    assert a == b and a != c
    assert all(1 <= len(r.split()) <= 12 and set(r.split()) <= set(VOCAB) for r in a)
    greedy = [sample_responses(model, tok, prompts[:3], temperature=0) for _ in range(2)]
    assert greedy[0] == greedy[1]


# ----------------------------------------------------------------------------- committed data
def test_committed_data_loads_and_is_small():
    D.verify_manifest(DATA)
    det = D.load_preferences("train", data_dir=DATA)
    bt = D.load_preferences("train", labelling="bradley_terry", data_dir=DATA)
    test = D.load_preferences("test", data_dir=DATA)
    assert len(det) == len(bt) >= 1000 and len(test) >= 100
    assert all(r["chosen_reward"] > r["rejected_reward"] for r in det + test)
    unordered = lambda recs: [(r["prompt"], {r["chosen"], r["rejected"]}) for r in recs]  # noqa: E731
    assert unordered(det) == unordered(bt)  # same pairs, possibly flipped
    key = lambda r: (r["prompt"], frozenset((r["chosen"], r["rejected"])))  # noqa: E731
    assert not {key(r) for r in det} & {key(r) for r in test}
    ranks = D.load_rankings("train", data_dir=DATA)
    assert len(ranks) >= 300 and all(len(r["responses"]) == len(r["rewards"]) == 4 for r in ranks)
    assert sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file()) < 20 * 2**20


def test_datasets_load_json():
    from datasets import load_dataset

    files = {s: str(DATA / f"preferences/{s}.jsonl") for s in ("train", "test")}
    ds = load_dataset("json", data_files=files)
    assert ds["train"].num_rows == len(D.load_preferences("train", data_dir=DATA))
    assert set(ds["test"].column_names) == {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}


def test_data_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert D.data_dir() == tmp_path.resolve()


# ----------------------------------------------------------------------------- bad inputs
LONG = " great" + " and" * 30  # 31 words: with a 3-word prompt and <eos>, 35 positions
GOOD = {
    "prompt": "the movie was",
    "chosen": " great .",
    "rejected": " dull .",
    "chosen_reward": 1.0,
    "rejected_reward": -1.0,
}
BAD_LINES = {
    "malformed JSON": '{"prompt": "the movie was", "chosen": ',
    "missing field": json.dumps({k: v for k, v in GOOD.items() if k != "rejected"}),
    "the same response": json.dumps({**GOOD, "rejected": " great .", "rejected_reward": 1.0}),
    "is empty": json.dumps({**GOOD, "chosen": " ", "chosen_reward": 0.0}),
    "not in the toy vocabulary": json.dumps({**GOOD, "chosen": " fantastic .", "chosen_reward": 0.0}),
    "true_reward": json.dumps({**GOOD, "chosen_reward": 5.0}),
    "context of 32": json.dumps({**GOOD, "chosen": LONG, "chosen_reward": true_reward(LONG)}),
}


@pytest.mark.parametrize("problem", list(BAD_LINES))
def test_bad_preference_line_names_file_and_line(data_copy, problem):
    path = data_copy / "preferences/train.jsonl"
    _edit_line(path, 7, BAD_LINES[problem])
    with pytest.raises(D.DataIntegrityError, match="train.jsonl"):  # the manifest notices first
        D.load_preferences("train", data_dir=data_copy)
    D.write_manifest(data_copy)  # re-sign, so that line validation is what fails
    with pytest.raises(ValueError, match=rf"train\.jsonl, line 7: .*{problem}") as err:
        D.load_preferences("train", data_dir=data_copy)
    assert not isinstance(err.value, D.DataIntegrityError)


def test_bad_ranking_lines(data_copy):
    path = data_copy / "rankings/test.jsonl"
    good = json.loads(path.read_text().splitlines()[1])
    for bad, problem in [
        (dict(good, responses=good["responses"][:1] * 4), "not distinct"),
        (dict(good, rewards=good["rewards"][:2]), "same length"),
        ({"prompt": "the movie was"}, "missing field"),
    ]:
        _edit_line(path, 2, json.dumps(bad))
        with pytest.raises(ValueError, match=rf"test\.jsonl, line 2: .*{problem}"):
            D.load_rankings("test", data_dir=data_copy, verify=False)


def test_a_data_dir_that_does_not_exist_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"data_dir .*dta.*did you mean .*data"):
        D.load_rankings("test", data_dir=tmp_path / "dta", verify=False)


@pytest.mark.parametrize("damage", ["changed", "truncated", "deleted"])
def test_manifest_catches_damaged_files(data_copy, damage):
    path = data_copy / "rankings/train.jsonl"
    raw = path.read_bytes()
    if damage == "changed":
        path.write_bytes(raw.replace(b"great", b"gREAT", 1))
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path.unlink()
    with pytest.raises(D.DataIntegrityError, match=r"rankings/train\.jsonl.*(changed or is truncated|missing)"):
        D.load_rankings("train", data_dir=data_copy)
    with pytest.raises(D.DataIntegrityError, match="rankings/train.jsonl"):
        D.verify_manifest(data_copy)
    D.load_rankings("test", data_dir=data_copy)  # other files are still fine
    (data_copy / D.MANIFEST).unlink()
    with pytest.raises(D.DataIntegrityError, match="MANIFEST.sha256 is missing"):
        D.load_rankings("test", data_dir=data_copy)


# ----------------------------------------------------------------------------- reproducibility
def test_small_build_is_bit_for_bit_reproducible(tmp_path):
    threads = torch.get_num_threads()
    stats = [build(tmp_path / name, seed=1, small=True, verbose=False) for name in ("a", "b")]
    assert torch.get_num_threads() == threads  # global state restored
    files = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert (tmp_path / "a" / D.MANIFEST).read_bytes() == (tmp_path / "b" / D.MANIFEST).read_bytes()
    for rel in files(tmp_path / "a"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    D.verify_manifest(tmp_path / "a")
    loaded = D.load_preferences("test", labelling="bradley_terry", data_dir=tmp_path / "a")
    assert len(loaded) == stats[0]["sizes"]["pref_test"]
    assert f"{stats[0]['sizes']['pref_train']} |" in (tmp_path / "a" / "README.md").read_text()


def test_the_reference_recipe_warms_up_decays_and_reaches_train_sft(ref):
    """The build's recipe (data/README.md: AdamW, warm-up, cosine to a tenth, clipping) is what train_sft runs:
    a schedule of 0 leaves the weights as they were, the build's schedule changes them."""
    from course_lib.loop.training import train_sft
    from course_lib.toyworld.build import REFERENCE_RECIPE, warmup_cosine

    assert [round(warmup_cosine(s, 400), 4) for s in (0, 39, 399)] == [0.025, 0.9791, 0.1]
    corpus, (model, tokenizer) = D.load_sft_corpus()[:8], ref
    for schedule, moves in ((lambda step, steps: 0.0, False), (warmup_cosine, True)):
        policy = load_model_and_tokenizer(DATA / "reference_model")[0]
        settings = {**REFERENCE_RECIPE, "lr_schedule": schedule}
        train_sft(policy, corpus, steps=2, batch_size=4, device="cpu", tokenizer=tokenizer, progress=False, **settings)
        same = all(torch.equal(a, b) for a, b in zip(policy.parameters(), model.parameters()))
        assert same != moves
