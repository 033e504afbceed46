"""The RRHF gradient tracker: candidate log-probs by place in the reward order, and when it records."""

import pytest
import torch

from course_lib.loop.rrhf_tracking import make_candidate_gradient_tracker, places_by_reward, ranking_logps
from course_lib.loop.scoring import response_logps
from course_lib.maths.rrhf_gradients import rrhf_candidate_gradients
from course_lib.toyworld.batching import encode_prompt_response
from course_lib.toyworld.data import load_rankings
from course_lib.toyworld.models import load_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world():
    reference, tokenizer = load_model_and_tokenizer()
    return {"reference": reference, "tokenizer": tokenizer, "rankings": load_rankings("train")[:6]}


def test_ranking_logps_against_one_candidate_at_a_time(world):
    logps, lengths = ranking_logps(world["reference"], world["tokenizer"], world["rankings"])
    assert logps.shape == lengths.shape == (6, 4)
    for n, ranking in enumerate(world["rankings"][:2]):
        for k, response in enumerate(ranking["responses"]):
            batch = encode_prompt_response(world["tokenizer"], [ranking["prompt"]], [response])
            with torch.no_grad():
                one, length = response_logps(world["reference"], batch)
            assert torch.allclose(logps[n, k], one[0], atol=1e-5) and lengths[n, k] == length[0]


def test_places_by_reward_is_stable():
    assert places_by_reward(torch.tensor([[1.0, 3.0, 1.0, 0.0]])).tolist() == [[1, 0, 2, 3]]


def test_the_tracker_records_by_place(world):
    tracker = make_candidate_gradient_tracker(world["rankings"], world["tokenizer"], every=5)
    assert tracker(world["reference"], 3, 12) is None
    record = tracker(world["reference"], 5, 12)
    assert tracker(world["reference"], 12, 12) is not None  # the last step always
    logps, lengths = ranking_logps(world["reference"], world["tokenizer"], world["rankings"])
    rewards = torch.tensor([r["rewards"] for r in world["rankings"]])
    rank_grad, sft_grad = rrhf_candidate_gradients(logps, lengths, rewards)
    places = places_by_reward(rewards)
    assert record["rank_grad"] == pytest.approx(rank_grad.gather(1, places).double().mean(0).tolist())
    assert record["sft_grad"] == [-1.0, 0.0, 0.0, 0.0]  # only the best, at place 0
    assert all(0 <= u + d <= 1 for u, d in zip(record["pushed_up"], record["pushed_down"]))
    assert record["pushed_down"][0] == 0.0 and record["pushed_up"][-1] == 0.0  # the best is never pushed down


def test_bad_every_is_named(world):
    with pytest.raises(ValueError, match="every"):
        make_candidate_gradient_tracker(world["rankings"], world["tokenizer"], every=0)
