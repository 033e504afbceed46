"""ranking_pairs: every reward-ordered pair of a ranking (ties skipped), or its best against its worst."""

import pytest

from course_lib.toyworld.data import load_rankings
from course_lib.toyworld.ranking_pairs import ranking_pairs


def test_all_pairs_against_a_brute_force_count():
    rankings = load_rankings("train")[:50]
    pairs = ranking_pairs(rankings)
    expected = sum(
        1
        for r in rankings
        for i in range(len(r["rewards"]))
        for j in range(len(r["rewards"]))
        if r["rewards"][i] > r["rewards"][j]
    )
    assert len(pairs) == expected
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    expected_pairs = [
        (r["prompt"], r["responses"][i], r["responses"][j])
        for r in rankings
        for i in range(len(r["rewards"]))
        for j in range(len(r["rewards"]))
        if r["rewards"][i] > r["rewards"][j]
    ]
    assert sorted((p["prompt"], p["chosen"], p["rejected"]) for p in pairs) == sorted(expected_pairs)


def test_a_ranking_without_ties_gives_k_choose_2_pairs_and_ties_none():
    ranking = {"prompt": "x", "responses": ["a", "b", "c", "d"], "rewards": [0.0, 3.0, 1.0, 2.0]}
    pairs = ranking_pairs([ranking])
    assert len(pairs) == 6
    assert {(p["chosen"], p["rejected"]) for p in pairs} == {
        ("b", "a"),
        ("c", "a"),
        ("d", "a"),
        ("b", "c"),
        ("b", "d"),
        ("d", "c"),
    }
    tied = {"prompt": "x", "responses": ["a", "b"], "rewards": [1.0, 1.0]}
    assert ranking_pairs([tied]) == [] and ranking_pairs([tied], which="best_worst") == []


def test_best_worst():
    ranking = {"prompt": "x", "responses": ["a", "b", "c"], "rewards": [1.0, 3.0, -2.0]}
    assert [(p["chosen"], p["rejected"]) for p in ranking_pairs([ranking], which="best_worst")] == [("b", "c")]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="which"):
        ranking_pairs([], which="some")
    with pytest.raises(ValueError, match=r"rankings\[0\]"):
        ranking_pairs([{"prompt": "x"}])
    with pytest.raises(ValueError, match="rewards"):
        ranking_pairs([{"prompt": "x", "responses": ["a"], "rewards": [1.0, 2.0]}])
    with pytest.raises(TypeError, match="rankings"):
        ranking_pairs("abc")
