"""The word-level tokenizer, the tiny GPT-2 reference model, and how to load them.

``data/reference_model`` holds the reference (SFT) model and its tokenizer, both
written by ``python -m course_lib.build_data``. Load them with
``load_model_and_tokenizer()``; any other local folder or hub name works too.
"""

import contextlib
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from .data import data_dir, local_path_or_hub_id, verify_if_listed
from .task import MAX_POSITIONS, VOCAB

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, EOS)  # ids 0, 1, 2


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Builds the word-level tokenizer: one id per vocabulary word, split on whitespace.

    Ids: ``<pad>`` = 0, ``<unk>`` = 1, ``<eos>`` = 2, then ``task.VOCAB`` in
    order. No token is added automatically (no BOS, no EOS); padding is on the right.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        padding_side="right",
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def build_reference_config(vocab_size: int) -> GPT2Config:
    """Returns the config of the tiny reference GPT-2 (2 layers, 2 heads, width 64, ~0.11M params).

    Dropout is off so that log-probabilities are deterministic functions of the
    weights (what DPO/IPO/RRHF losses assume). BOS = EOS = ``<eos>`` (id 2), PAD = 0.
    """
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=MAX_POSITIONS,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_inner=256,
        activation_function="gelu",  # exact GELU: one fused op, faster on CPU than GPT-2's tanh approximation
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        bos_token_id=SPECIAL_TOKENS.index(EOS),
        eos_token_id=SPECIAL_TOKENS.index(EOS),
        tie_word_embeddings=True,
    )


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    verify: bool = True,
):
    """Loads ``(model, tokenizer)`` with the Auto classes; the model is returned in eval mode.

    ``name_or_path`` defaults to ``data_dir() / "reference_model"``. A name that looks local (see
    :func:`course_lib.toyworld.data.local_path_or_hub_id`: an existing path, a ``Path``, one starting with
    ``.``, ``~`` or ``/``, ``dir/name`` under an existing folder ``dir``, ...) must be a folder with a saved
    model, else a FileNotFoundError names it at once, with no hub lookup; other names go to the Hugging
    Face hub. A local folder listed in a ``MANIFEST.sha256`` above it (the data folder, a build's output)
    is checked against it first when ``verify``: a changed, truncated or stray file raises
    DataIntegrityError naming it. A weight or tokenizer file that cannot be read raises ValueError
    naming the folder's files. ``device`` defaults to CPU and ``dtype`` to the saved dtype (float32). A
    tokenizer without a pad token gets ``pad_token = eos_token``.
    """
    where = local_path_or_hub_id(name_or_path if name_or_path is not None else data_dir() / "reference_model", "model")
    if isinstance(where, Path):
        if not where.is_dir():
            raise FileNotFoundError(
                f"No model folder at {where.resolve()}. Build it with `python -m course_lib.build_data` "
                "or set COURSE_DATA_DIR to a folder that contains reference_model/."
            )
        if not (where / "config.json").is_file():
            raise ValueError(f"{where.resolve()} exists but has no config.json: it is not a saved model folder.")
        if verify:
            verify_if_listed(where)
    model = _from_pretrained(AutoModelForCausalLM, where, "model weights", (".safetensors", ".bin", ".pt"), dtype=dtype)
    tokenizer = _from_pretrained(AutoTokenizer, where, "tokenizer", ("token", ".model", ".txt"))
    if tokenizer.pad_token is None:  # e.g. hub GPT-2: pad with EOS (the toy tokenizer has its own <pad>)
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    model.eval()
    return model, tokenizer


def _from_pretrained(auto_class, where: Path | str, what: str, file_hints: tuple[str, ...], **kwargs):
    """``auto_class.from_pretrained(where)``; for a local folder, a failure is a ValueError naming its files."""
    try:
        return auto_class.from_pretrained(str(where), **kwargs)
    except Exception as err:
        if not isinstance(where, Path):
            raise
        files = sorted(p.name for p in where.iterdir() if any(hint in p.name for hint in file_hints))
        raise ValueError(
            f"cannot load the {what} in {where.resolve()} ({', '.join(files) or f'no {what} file'}): "
            f"{type(err).__name__}: {err}. Is a file truncated or corrupt?"
        ) from err


@contextlib.contextmanager
def hub_progress_bars(shown: bool):
    """Hide transformers' own progress bars ("Loading weights") unless ``shown``; restore them after."""
    was_shown = hf_logging.is_progress_bar_enabled()
    if not shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_shown and not shown:
            hf_logging.enable_progress_bar()
