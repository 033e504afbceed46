"""The real-model path: ``python -m course_lib.compare --model DIR --dataset DIR`` with any causal LM.

No hub access here, so the "real" models are built from config and saved locally: a GPT-2 and a Llama
(2 layers, width 32), each with a byte-level BPE tokenizer trained offline on the toy SFT corpus (so
words split into several sub-word tokens, unlike the course's word-level tokenizer). The Llama one has a
chat template; the GPT-2 one has none. The dataset is a local folder with ``train.jsonl`` and
``test.jsonl`` in TRL's preference format.

What is checked:

- ``encode_prompt`` applies the chat template when the tokenizer has one, and plain ids otherwise;
  responses are scored up to and including eos; sampling decodes to plain text.
- ``compare.main([... "--model", DIR, "--dataset", DIR ...])`` runs DPO and IPO end to end for both
  architectures and writes a sane ``results.json`` (no true reward: real models have none).
- The reference's log-probs are precomputed: the reference model never runs inside an optimiser step.
- Memory: no forward pass sees more rows than the training batch (2 x ``--batch-size`` sequences, chosen
  and rejected), evaluation and the reference precompute included.
- Memory and time follow the batch, not the data set: no forward pass carries columns that are padding
  in every row (on data longer than ``training.FIXED_WIDTH_UP_TO`` tokens).
- TRL's other preference formats (implicit prompt; conversational) load and train; implicit prompts split
  like TRL's ``extract_prompt`` except where the responses diverge inside a word.
- On CUDA (skipped elsewhere): bf16 compute, fp32 master weights, and no reference weights on the GPU
  during the optimiser steps (pure-bf16 Adam would drop the small updates of real-model learning rates).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from course_lib import compare
from course_lib.toyworld import data
from course_lib.toyworld.batching import decode_response, encode_prompt, encode_prompt_response, is_word_level
from course_lib.toyworld.sampling import sample_responses

REPO = Path(__file__).resolve().parent.parent
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
N_TRAIN, N_TEST = 32, 8
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


# ----------------------------------------------------------------------------- fixtures: tiny models, data
def _train_bpe(special_tokens: list[str], vocab_size: int = 420):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = []
    with open(REPO / "data" / "sft" / "train.jsonl") as f:
        for line in f:
            row = json.loads(line)
            texts.append(row["prompt"] + row["completion"])
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts, trainer)
    return backend


def build_tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 (width 32) with a byte-level BPE tokenizer; eos = pad = <|endoftext|>; no chat template."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe([eos]), eos_token=eos, bos_token=eos, unk_token=eos, pad_token=eos
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=128,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_inner=64,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama (width 32, grouped-query attention) with a BPE tokenizer and a simple chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def toy_rows(split: str, n: int) -> list[dict]:
    with open(REPO / "data" / "preferences" / f"{split}.jsonl") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(n))]
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]


def write_dataset(folder: Path, convert=lambda row: row) -> Path:
    """A TRL-format preference folder (train.jsonl, test.jsonl) from the toy pairs, each row passed through
    ``convert``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for row in toy_rows(split, n):
                f.write(json.dumps(convert(row)) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "gpt2": build_tiny_gpt2(root / "gpt2"),
        "llama": build_tiny_llama(root / "llama"),
        "dataset": write_dataset(root / "prefs"),
    }


def load(folder: Path):
    from course_lib.toyworld.models import load_model_and_tokenizer

    return load_model_and_tokenizer(folder)


def compare_args(model: Path, dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--losses",
        "dpo",
        "ipo",
        "--steps",
        "5",
        "--eval-samples",
        "16",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


# ----------------------------------------------------------------------------- tokenization
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tiny_tokenizers_are_sub_word(tiny, arch):
    _, tokenizer = load(tiny[arch])
    assert not is_word_level(tokenizer)
    text = "the dialogue was really funny also rather clever superb ."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # some words are split
    assert tokenizer.decode(ids) == text


def test_encode_prompt_applies_the_chat_template_when_present(tiny):
    _, llama_tok = load(tiny["llama"])
    prompt = "this film is"
    ids = encode_prompt(llama_tok, prompt)
    assert llama_tok.decode(ids) == "<|user|>this film is</s><|assistant|>"
    _, gpt2_tok = load(tiny["gpt2"])
    assert gpt2_tok.chat_template is None
    assert encode_prompt(gpt2_tok, prompt) == gpt2_tok(prompt)["input_ids"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_labels_cover_the_response_and_eos_only(tiny, arch):
    _, tokenizer = load(tiny[arch])
    prompts, responses = ["this film is", "the music was"], [" so moving .", " slow and clumsy also dull ."]
    batch = encode_prompt_response(tokenizer, prompts, responses)
    for i, response in enumerate(responses):
        scored = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert scored[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(scored[:-1]) == response
        n_prompt = len(encode_prompt(tokenizer, prompts[i]))
        assert (batch["labels"][i, :n_prompt] == -100).all()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_samples_decode_to_plain_text(tiny, arch):
    model, tokenizer = load(tiny[arch])
    prompts = ["this film is", "the music was", "the story was"]
    responses = sample_responses(
        model, tokenizer, prompts, max_new_tokens=8, generator=torch.Generator().manual_seed(0)
    )
    assert len(responses) == 3 and all(isinstance(r, str) and r for r in responses)
    assert not any(special in r for r in responses for special in ("<|assistant|>", "</s>", "<|endoftext|>", "<pad>"))
    assert (
        decode_response(tokenizer, tokenizer(" so moving .", add_special_tokens=False)["input_ids"]) == " so moving ."
    )


# ----------------------------------------------------------------------------- compare, end to end
class ForwardLog:
    """Records every forward pass of the models that ``load_model_and_tokenizer`` returns (and their copies).

    Each record: (model kind, rows, grad enabled, inside an evaluation). The reference is the model object
    ``load_model_and_tokenizer`` returned; any other module of the same class (a deepcopy) is a policy.
    """

    def __init__(self, monkeypatch):
        import course_lib.loop.evaluation as evaluation
        import course_lib.toyworld.models as models

        self.records: list[tuple[str, int, bool, bool]] = []
        self.widths: list[tuple[str, int, int, bool]] = []  # (kind, width, longest real row, grad enabled)
        self.references: list[torch.nn.Module] = []
        self.in_eval = 0
        real_load, real_eval = models.load_model_and_tokenizer, evaluation.evaluate_policy

        def load_and_watch(*args, **kwargs):
            model, tokenizer = real_load(*args, **kwargs)
            self.references.append(model)
            model.register_forward_pre_hook(hook, with_kwargs=True)  # copied into deepcopies too
            return model, tokenizer

        def evaluate_and_mark(*args, **kwargs):
            self.in_eval += 1
            try:
                return real_eval(*args, **kwargs)
            finally:
                self.in_eval -= 1

        def hook(module, args, kwargs):  # a plain function: deepcopy shares it (a bound method would be copied)
            ids = kwargs.get("input_ids", args[0] if args else None)
            kind = "reference" if any(module is r for r in self.references) else "policy"
            self.records.append((kind, int(ids.shape[0]), torch.is_grad_enabled(), self.in_eval > 0))
            mask = kwargs.get("attention_mask")
            if mask is not None:
                self.widths.append((kind, int(ids.shape[1]), int(mask.sum(-1).max()), torch.is_grad_enabled()))

        monkeypatch.setattr(models, "load_model_and_tokenizer", load_and_watch)
        monkeypatch.setattr(evaluation, "evaluate_policy", evaluate_and_mark)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_compare_runs_dpo_and_ipo_on_a_local_model_and_dataset(tiny, arch, tmp_path, monkeypatch):
    log = ForwardLog(monkeypatch)
    out = tmp_path / "out"
    assert compare.main(compare_args(tiny[arch], tiny["dataset"], out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == str(tiny[arch])
    assert [r["loss"] for r in results["runs"]] == ["dpo", "ipo"]
    for run in results["runs"]:
        assert len(run["history"]) == 5 and not run["interrupted"]
        assert all(math.isfinite(e["loss"]) for e in run["history"])
        assert run["length_normalize"] == (run["loss"] == "ipo")
        e = run["eval"]
        assert 0.0 <= e["preference_accuracy"] <= 1.0
        assert math.isfinite(e["kl"]) and e["kl"] >= 0.0
        assert e["reward"] is None  # a real model has no true reward
        assert all(isinstance(s["response"], str) for s in e.get("samples", []))
        # training moved the policy: the margin grew from 0 at step 1 (policy == reference)
        assert abs(run["history"][0]["margin"]) < 1e-4 and run["history"][-1]["margin"] > 0
    assert (out / "margin_and_kl.png").stat().st_size > 0
    # the reference log-probs are precomputed: no reference forward with gradients, none inside a training step
    train_steps = [rec for rec in log.records if rec[2]]
    assert train_steps and all(kind == "policy" for kind, *_ in train_steps)
    assert not any(kind == "reference" and grad for kind, _, grad, _ in log.records)
    # on CPU the models stay fp32
    assert all(p.dtype == torch.float32 for p in log.references[0].parameters())


def test_forward_passes_never_exceed_the_training_batch(tiny, tmp_path, monkeypatch):
    """Memory scales with --batch-size: the reference precompute and the evaluation are chunked too.

    With a real model a forward pass over many rows is what runs out of memory (logits are rows x length
    x vocabulary, e.g. 151,936 wide for Qwen2.5), so no pass may see more rows than a training step does.
    """
    log = ForwardLog(monkeypatch)
    batch_size = 4
    argv = compare_args(tiny["gpt2"], tiny["dataset"], tmp_path / "out", "--batch-size", str(batch_size))
    argv[argv.index("--losses") + 1 : argv.index("--steps")] = ["ipo"]
    argv[argv.index("--steps") + 1] = "2"
    assert compare.main(argv) == 0
    too_big = sorted(
        {
            (kind, rows, "eval" if in_eval else "train/precompute")
            for kind, rows, _, in_eval in log.records
            if rows > 2 * batch_size
        }
    )
    assert not too_big, f"forward passes with more than 2 x --batch-size = {2 * batch_size} rows: {too_big}"


# ----------------------------------------------------------------------------- TRL's other preference formats
def implicit_prompt(row):
    return {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}


def conversational(row):
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
    }


def conversational_implicit_prompt(row):
    user = {"role": "user", "content": row["prompt"]}
    return {
        "chosen": [user, {"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [user, {"role": "assistant", "content": row["rejected"].strip()}],
    }


def test_without_a_test_split_the_evaluation_pairs_are_held_out(tmp_path):
    """A dataset folder with train.jsonl only: the pairs ``compare`` evaluates on must not be trained on."""
    dataset = write_dataset(tmp_path / "prefs")
    (dataset / "test.jsonl").unlink()
    train, test = data.load_pairs(str(dataset), "deterministic")
    assert test and len(train) + len(test) == N_TRAIN
    assert not {json.dumps(p, sort_keys=True) for p in train} & {json.dumps(p, sort_keys=True) for p in test}


def test_implicit_prompts_split_like_trl_except_mid_word():
    """``data.standard_pair`` against TRL's ``extract_prompt`` on the toy pairs in implicit-prompt form.

    Where chosen and rejected diverge at the start of a word, both give the same split. Where they diverge
    inside a word (" so moving" against " superb" share " s"), TRL 1.16 cuts inside the word (prompt
    "... s", responses "o moving ...", "uperb ..."); ``course_lib`` cuts at the last space before it, so
    that prompt and responses stay whole words.
    """
    from trl.data_utils import extract_prompt

    same = mid_word = 0
    for row in toy_rows("train", 300):
        implicit = implicit_prompt(row)
        ours, theirs = data.standard_pair(dict(implicit)), extract_prompt(dict(implicit))
        assert (
            ours["prompt"] + ours["chosen"] == implicit["chosen"]
            and ours["prompt"] + ours["rejected"] == implicit["rejected"]
        )
        assert ours["chosen"].startswith(" ") and not ours["prompt"].endswith(" ")
        if theirs["chosen"].startswith(" "):
            assert (ours["prompt"], ours["chosen"], ours["rejected"]) == (
                theirs["prompt"],
                theirs["chosen"],
                theirs["rejected"],
            )
            same += 1
        else:  # TRL cut inside a word; course_lib's prompt is TRL's up to its last space
            assert (
                theirs["prompt"].startswith(ours["prompt"]) and " " not in theirs["prompt"][len(ours["prompt"]) + 1 :]
            )
            mid_word += 1
    assert same > 100 and mid_word > 10  # both cases occur in the toy data


def test_forward_passes_carry_no_all_padding_columns(tiny, tmp_path, monkeypatch):
    """Memory and time scale with the longest pair *in the batch*, not in the data set.

    Real preference data are long-tailed (UltraFeedback has pairs of thousands of tokens). If every
    training step and the reference precompute are padded to the data set's longest pair, each step costs
    (and holds logits of) rows x longest-length x vocabulary. Here one training pair is far longer than the
    others; the forward passes must not carry columns that are padding in every row. (The toy world,
    whose pairs all fit in ``training.FIXED_WIDTH_UP_TO`` tokens, pads to one width on purpose: see there.)
    """
    import course_lib.loop.training as training

    monkeypatch.setattr(training, "FIXED_WIDTH_UP_TO", 16)  # this tiny data set counts as "long"
    long_pair = {
        "prompt": "this film is",
        "chosen": " " + " ".join(["really great and quite moving"] * 8) + " .",
        "rejected": " dull .",
    }
    dataset = write_dataset(tmp_path / "prefs", lambda row: row)
    rows = (dataset / "train.jsonl").read_text().splitlines()
    rows[5] = json.dumps(long_pair)
    (dataset / "train.jsonl").write_text("\n".join(rows) + "\n")
    log = ForwardLog(monkeypatch)
    argv = compare_args(tiny["gpt2"], dataset, tmp_path / "out", "--batch-size", "4")
    argv[argv.index("--losses") + 1 : argv.index("--steps")] = ["dpo"]
    assert compare.main(argv) == 0
    padded = sorted({(kind, width, longest) for kind, width, longest, _ in log.widths if width > longest})
    assert not padded, f"forward passes wider than their longest row (kind, width, longest row): {padded[:5]}"


@pytest.mark.parametrize(
    "convert", [implicit_prompt, conversational, conversational_implicit_prompt], ids=lambda f: f.__name__
)
def test_trl_preference_formats_load_and_train(tiny, tmp_path, convert):
    """TRL's preference type comes in four forms: standard or conversational, explicit or implicit prompt.

    ``trl-lib/ultrafeedback_binarized`` (the dataset TRL's DPO examples use) is conversational with an
    implicit prompt. The conversational forms need the chat template (the Llama tokenizer here).
    """
    dataset = write_dataset(tmp_path / "prefs", convert)
    train, test = data.load_pairs(str(dataset), "deterministic")
    assert len(train) == N_TRAIN and len(test) == N_TEST
    argv = compare_args(tiny["llama"], dataset, tmp_path / "out")
    argv[argv.index("--steps") + 1] = "1"
    assert compare.main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(math.isfinite(run["history"][-1]["loss"]) for run in results["runs"])


# ----------------------------------------------------------------------------- precision
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by scripts/gpu_check.sh)")
def test_cuda_run_uses_bf16_compute_fp32_master_weights_and_releases_the_reference(tiny, tmp_path, monkeypatch):
    import course_lib.loop.scoring as scoring

    log = ForwardLog(monkeypatch)
    seen = {}
    real_step = torch.optim.Adam.step

    def watched_step(self, *args, **kwargs):
        if "dtypes" not in seen:
            seen["dtypes"] = {p.dtype for group in self.param_groups for p in group["params"]}
            seen["reference_on_cuda"] = any(p.is_cuda for r in log.references for p in r.parameters())
            seen["allocated"] = torch.cuda.memory_allocated()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", watched_step)
    argv = compare_args(tiny["llama"], tiny["dataset"], tmp_path / "out", "--device", "cuda")
    assert compare.main(argv) == 0
    assert seen["dtypes"] == {torch.float32}, "the policy's master weights must be fp32 (autocast does bf16)"
    assert not seen["reference_on_cuda"], "the reference must leave the GPU once its log-probs are precomputed"
    assert scoring.autocast_for(torch.device("cuda")).fast_dtype == torch.bfloat16
