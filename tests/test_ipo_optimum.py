"""IPO's Eq. 11 optimum on pair records: against a brute-force loop, its range, and its errors."""

import random

import pytest
import torch

from course_lib import ipo_optimal_margins
from course_lib.maths.ipo_optimum import eq11_margins_from_win_rates, win_rates
from course_lib.toyworld.data import load_preferences


def brute_force_margins(pairs, beta, population=None):
    population = pairs if population is None else population
    margins = []
    for pair in pairs:
        others = [
            r for p in population if p["prompt"] == pair["prompt"] for r in (p["chosen_reward"], p["rejected_reward"])
        ]

        def win_rate(reward, others=others):
            total = 0.0
            for other in others:
                if reward > other:
                    total += 1.0
                elif reward == other:
                    total += 0.5
            return total / len(others)

        margins.append((win_rate(pair["chosen_reward"]) - win_rate(pair["rejected_reward"])) / beta)
    return torch.tensor(margins, dtype=torch.float64)


def random_pairs(n, n_prompts, seed):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b = rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0]), rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0])
        pairs.append(
            {"prompt": f"p{rng.randrange(n_prompts)}", "chosen_reward": max(a, b), "rejected_reward": min(a, b)}
        )
    return pairs


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_matches_brute_force_loop(seed, beta):
    pairs = random_pairs(60, 4, seed)  # few reward values: many ties, across pairs and within them
    torch.testing.assert_close(ipo_optimal_margins(pairs, beta=beta), brute_force_margins(pairs, beta))


def test_held_out_pairs_against_a_population():
    population, held_out = random_pairs(80, 3, 10), random_pairs(20, 3, 11)
    got = ipo_optimal_margins(held_out, beta=0.5, population=population)
    torch.testing.assert_close(got, brute_force_margins(held_out, 0.5, population))
    assert not torch.allclose(got, ipo_optimal_margins(held_out, beta=0.5))  # mu matters


def test_on_the_stored_training_pairs():
    pairs = load_preferences("train")
    margins = ipo_optimal_margins(pairs, beta=0.5)
    assert margins.shape == (len(pairs),)
    # deterministic labels: the chosen response has the higher reward, so it wins more often: 0 < h* < 1/tau
    assert (margins > 0).all() and (margins < 2.0).all()
    sample = random.Random(0).sample(pairs, 40)
    torch.testing.assert_close(
        ipo_optimal_margins(sample, beta=0.5, population=pairs), brute_force_margins(sample, 0.5, pairs)
    )


def test_two_actions_reach_half_over_tau():
    # one prompt, the same two responses: win rates 3/4 and 1/4, so h* = (1/2)/tau = 1/(2 tau), Eq. 17's target
    pairs = [{"prompt": "x", "chosen_reward": 1.0, "rejected_reward": 0.0}] * 3
    torch.testing.assert_close(ipo_optimal_margins(pairs, beta=0.25), torch.full((3,), 2.0, dtype=torch.float64))


def test_a_reversed_pair_has_a_negative_margin():
    pairs = [
        {"prompt": "x", "chosen_reward": 1.0, "rejected_reward": 0.0},
        {"prompt": "x", "chosen_reward": -1.0, "rejected_reward": 2.0},  # a noisy label
    ]
    margins = ipo_optimal_margins(pairs, beta=1.0)
    assert margins[0] > 0 > margins[1]


def test_does_not_mutate_its_inputs():
    pairs = random_pairs(10, 2, 3)
    before = [dict(p) for p in pairs]
    ipo_optimal_margins(pairs, beta=0.5)
    assert pairs == before


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="true rewards"):
        ipo_optimal_margins([{"prompt": "x", "chosen": " a", "rejected": " b"}], beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        ipo_optimal_margins(random_pairs(4, 1, 0), beta=0.0)
    with pytest.raises(ValueError, match="pairs must be a non-empty list"):
        ipo_optimal_margins([], beta=0.5)
    with pytest.raises(TypeError, match=r"pairs\[0\] must be a dict"):
        ipo_optimal_margins(["x"], beta=0.5)
    with pytest.raises(ValueError, match="population has no pair for the prompt"):
        ipo_optimal_margins(
            random_pairs(4, 1, 0),
            beta=0.5,
            population=[{"prompt": "other", "chosen_reward": 1.0, "rejected_reward": 0.0}],
        )


def test_maths_errors():
    with pytest.raises(TypeError, match="groups must hold integers"):
        win_rates(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        win_rates(torch.zeros(2), torch.zeros(3, dtype=torch.long), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt id 5"):
        win_rates(torch.zeros(1), torch.tensor([5]), torch.zeros(1), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        eq11_margins_from_win_rates(torch.tensor([1.5]), torch.tensor([0.0]), beta=1.0)
