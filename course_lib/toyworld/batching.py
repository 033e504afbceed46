"""The one place where a (prompt, response) pair becomes token tensors.

Convention used by every chapter module::

    input_ids = prompt word ids + response word ids + <eos> id, right-padded with <pad>
    labels    = -100 on prompt positions and padding; the ids of the response words and of <eos>

``labels`` are aligned with ``input_ids`` (not shifted): the log-probability of
``labels[:, t]`` is read from ``logits[:, t - 1]``, as Hugging Face models do.
"""

import weakref

import torch

from ..maths.logprobs import IGNORE_INDEX


def _word_ids(vocab: dict[str, int], text: str, what: str, index: int) -> list[int]:
    """Maps each whitespace-separated word of ``text`` to its id; raises ValueError on unknown words."""
    ids = []
    for word in text.split():
        if word not in vocab:
            raise ValueError(f"{what} {index} contains {word!r}, which is not a vocabulary word: {text!r}")
        ids.append(vocab[word])
    if not ids:
        raise ValueError(f"{what} {index} is empty: {text!r}")
    return ids


def is_word_level(tokenizer) -> bool:
    """True for the course's word-level tokenizer (one id per vocabulary word, split on whitespace)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordLevel"


_WORDS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _words_only(tokenizer) -> dict[str, int]:
    """word -> id for the non-special tokens, built once per tokenizer (and rebuilt if its size changes)."""
    cached = _WORDS_CACHE.get(tokenizer)
    if cached is None or cached[0] != len(tokenizer):
        special = set(tokenizer.all_special_tokens)
        cached = (len(tokenizer), {w: i for w, i in tokenizer.get_vocab().items() if w not in special})
        _WORDS_CACHE[tokenizer] = cached
    return cached[1]


def encode_prompt(tokenizer, prompt, index: int = 0) -> list[int]:
    """Token ids of one prompt: a string, or a conversation (a list of ``{"role", "content"}`` messages).

    Word-level tokenizer: one id per word (unknown words raise). Any other Hugging Face tokenizer: its
    chat template with a generation prompt when it has one (a user turn holding ``prompt``, or the
    conversation itself), else plain ``tokenizer(prompt)`` ids.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if isinstance(prompt, list):
        check_messages(prompt, f"prompt {index}")
        if not has_template:
            raise ValueError(f"prompt {index} is a conversation, but the tokenizer has no chat template")
        return _chat_ids(tokenizer, prompt)
    if not isinstance(prompt, str):
        raise TypeError(
            f"prompt {index} must be a string or a list of {{'role', 'content'}} messages, "
            f"got {type(prompt).__name__}: {prompt!r}"
        )
    if is_word_level(tokenizer):
        return _word_ids(_words_only(tokenizer), prompt, "prompt", index)
    if not prompt.strip():
        raise ValueError(f"prompt {index} is empty: {prompt!r}")
    if has_template:
        return _chat_ids(tokenizer, [{"role": "user", "content": prompt}])
    return list(tokenizer(prompt)["input_ids"])


def _chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The chat template's ids for ``messages``, ending with the generation prompt."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def check_messages(messages, what: str) -> None:
    """A conversation: a non-empty list of ``{"role": str, "content": str}``; else ValueError naming ``what``."""
    if not messages:
        raise ValueError(f"{what} is an empty conversation")
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"{what}: message {k} must be a {{'role', 'content'}} dict, got {type(message).__name__}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = "nothing" if key not in message else type(message[key]).__name__
                raise ValueError(f"{what}: message {k} needs a string {key!r}, got {got}")


def encode_response(tokenizer, response: str, index: int = 0) -> list[int]:
    """Token ids of one response followed by ``eos`` (which is scored too)."""
    if not isinstance(response, str):
        raise TypeError(f"response {index} must be a string, got {type(response).__name__}: {response!r}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: responses must end with one")
    if is_word_level(tokenizer):
        return _word_ids(_words_only(tokenizer), response, "response", index) + [tokenizer.eos_token_id]
    if not response.strip():
        raise ValueError(f"response {index} is empty: {response!r}")
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def decode_response(tokenizer, ids: list[int]) -> str:
    """The text of sampled response ids (no eos): words joined by spaces, or the tokenizer's decode."""
    if is_word_level(tokenizer):
        return " ".join(tokenizer.convert_ids_to_tokens(ids))
    return tokenizer.decode(ids, skip_special_tokens=True)


def encode_prompt_response(tokenizer, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
    """Encodes B (prompt, response) pairs into right-padded tensors of shape (B, T).

    Returns ``{"input_ids", "attention_mask", "labels"}`` (all ``torch.long``),
    where T = the longest ``len(prompt) + len(response) + 1`` in the batch.
    ``labels`` is -100 on prompt and padding positions and equals ``input_ids``
    on the response words and the final ``<eos>``. Raises ValueError for a word
    outside the vocabulary (it is never mapped to ``<unk>``), an empty prompt or
    response, or lists of different lengths.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("cannot encode an empty batch")
    rows = [
        (encode_prompt(tokenizer, prompt, i), encode_response(tokenizer, response, i))
        for i, (prompt, response) in enumerate(zip(prompts, responses))
    ]
    T = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), T), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r)
        attention_mask[i, :n] = 1
        labels[i, len(p) : n] = torch.tensor(r)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
