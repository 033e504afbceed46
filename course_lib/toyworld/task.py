"""The toy world: a tiny movie-review language and its closed-form true reward.

This mirrors the controlled-sentiment task of the DPO paper (Rafailov et al.,
2023): a prompt opens a short movie review ("the movie was") and a response
continues it ("really great but a bit slow ."). Because the vocabulary is
small and the reward is a formula, we always know the *true* reward of any
response and can watch whether preference learning raises it (or games it).

True reward of a response with ``n`` whitespace-separated tokens (``"."``
counts as a token)::

    reward = (#distinct positive words - #distinct negative words)
             - 0.5 * (#tokens that repeat an earlier token of the response)
             - 0.1 * max(0, n - 8)

Only the response is scored, never the prompt. A sentiment word counts once
however often it appears, and every repeat costs 0.5, so spamming
"great great great" (reward 0.0) loses to plain "great" (reward 1.0); very
long responses pay 0.1 per token beyond 8. Reward hacking is thus visible.
"""

import torch

# fmt: off
POSITIVE_WORDS: tuple[str, ...] = (
    "good", "great", "excellent", "wonderful", "brilliant", "superb", "fun", "enjoyable", "beautiful", "moving",
    "charming", "clever", "delightful", "funny",
)
NEGATIVE_WORDS: tuple[str, ...] = (
    "bad", "awful", "terrible", "boring", "dull", "weak", "poor", "silly", "tedious", "bland", "clumsy", "messy",
    "painful", "slow",
)
# Sentiment-free words that glue a continuation together.
FILLER_WORDS: tuple[str, ...] = (
    "very", "quite", "really", "so", "too", "rather", "a", "bit", "and", "but", "yet", "at", "times", "also",
    "mostly", "in", "places",
)
# Review openings. Every word in them is part of the vocabulary too.
PROMPTS: tuple[str, ...] = (
    "the movie was", "the film was", "i thought the movie was", "i thought the acting was", "the acting was",
    "the plot was", "the story was", "the script was", "the ending was", "the music was", "the cast was",
    "the dialogue was", "the pacing was", "the characters were", "honestly the movie was", "overall the film was",
    "overall i found it", "i found the plot", "i found the ending", "my friend said it was", "to be honest it was",
    "this film is", "this movie is", "watching it was", "the director made it", "the sequel was",
    "the first half was", "the second half was", "in short it was", "the soundtrack was", "the jokes were",
    "the action scenes were", "the lead actor was", "i think the story is",
)
# fmt: on

_prompt_words = sorted({w for p in PROMPTS for w in p.split()} - set(FILLER_WORDS))
# Every ordinary word of the toy world, in a fixed order (special tokens excluded).
VOCAB: tuple[str, ...] = (".",) + POSITIVE_WORDS + NEGATIVE_WORDS + FILLER_WORDS + tuple(_prompt_words)
assert len(set(VOCAB)) == len(VOCAB), "a word appears twice in the vocabulary"

_POSITIVE = frozenset(POSITIVE_WORDS)
_NEGATIVE = frozenset(NEGATIVE_WORDS)
_LENGTH_FREE = 8
#: The toy model's context: a prompt (<= 6 words), a response and <eos> must fit in it.
MAX_POSITIONS = 32


def true_reward(response: str) -> float:
    """Computes the closed-form true reward of one response (prompt excluded).

    ``reward = (#distinct pos - #distinct neg) - 0.5 * #repeated tokens
    - 0.1 * max(0, n_tokens - 8)``, where tokens are whitespace-separated
    words and ``"."`` counts as a token.
    The value is computed in integer tenths, so it is an exact multiple of 0.1
    (e.g. ``true_reward("great fun .") == 2.0``,
    ``true_reward("great great great") == 0.0``,
    ``true_reward("dull but fun .") == 0.0``).
    """
    tokens = response.split()
    sentiment = len(_POSITIVE.intersection(tokens)) - len(_NEGATIVE.intersection(tokens))  # distinct words
    repeats = len(tokens) - len(set(tokens))  # tokens equal to an earlier token of the response
    tenths = 10 * sentiment - 5 * repeats - max(0, len(tokens) - _LENGTH_FREE)
    return tenths / 10


def true_rewards(responses: list[str]) -> torch.Tensor:
    """Computes ``true_reward`` for each response; returns a float32 tensor of shape (B,)."""
    return torch.tensor([true_reward(r) for r in responses], dtype=torch.float32)
