"""MMSE's multi-grained loss (losses/multi_grained.py): the global retrieval part and the local ranking part on a
hand-checkable batch, what gets encoded, the conflicting-random rule and the settings it rejects.

(The combination with StageRankingLoss and the per-head option are also exercised in test_stage_ranking.py.)
"""

from __future__ import annotations

import math

import pytest
import torch

from retrieval_zoo.losses.multi_grained import MultiGrainedLoss, drop_conflicting_randoms


def apply(loss, queries: torch.Tensor, positives: torch.Tensor, batch: dict, encode) -> dict:
    """What RetrievalModule does: encode the items the loss asks for, then call it with tensors only."""
    return loss(queries, positives, batch, loss.extra_vectors(batch, encode))


def cross_entropy(logits: list[float], target: int) -> float:
    finite = [v for v in logits if v != float("-inf")]
    return -logits[target] + math.log(sum(math.exp(v) for v in finite))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# the `hand` fixture (conftest.py): queries (1, 0), (0, 1); positives 10 = (2, 0), 11 = (0, 1), in-batch logits
# [[2, 0], [0, 1]]; item 5 = (1, 1), 7 = (0, -1), item 0 (what padding encodes) = (9, 9)
RANDOM = torch.tensor([5, 11])  # item 11 is row 1's own positive: masked in row 1 only
HARD = torch.tensor([[7], [-1]])  # row 1: padding
# columns: 2 in-batch, 2 random, 1 hard
ROW0 = [2.0, 0.0, 1.0, 0.0, 0.0]
ROW1 = [0.0, 1.0, 1.0, float("-inf"), float("-inf")]


def test_retrieval_part_by_hand_with_randoms_hard_items_and_weights(hand):
    loss = MultiGrainedLoss(temperature=1.0, beta=0.0)
    data = hand.batch(random_items=RANDOM, hard_items=HARD, pos_weight=torch.tensor([1.0, 0.5]))
    parts = apply(loss, hand.queries, hand.positives, data, hand.encode)
    expected = (cross_entropy(ROW0, 0) + 0.5 * cross_entropy(ROW1, 1)) / 1.5
    assert parts["retrieval"].item() == pytest.approx(expected, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert parts["ranking"].item() == 0.0


def test_temperature_divides_the_logits(hand):
    loss = MultiGrainedLoss(temperature=2.0, beta=0.0)
    value = apply(loss, hand.queries, hand.positives, hand.batch(random_items=RANDOM), hand.encode)["retrieval"]
    expected = (cross_entropy([1.0, 0.0, 0.5, 0.0], 0) + cross_entropy([0.0, 0.5, 0.5, float("-inf")], 1)) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_switches_ignore_random_and_hard_items(hand):
    plain = apply(MultiGrainedLoss(temperature=1.0, beta=0.0), hand.queries, hand.positives, hand.batch(),
                  hand.encode)["retrieval"]
    assert plain.item() == pytest.approx((cross_entropy([2.0, 0.0], 0) + cross_entropy([0.0, 1.0], 1)) / 2,
                                         rel=1e-6)
    off = MultiGrainedLoss(temperature=1.0, beta=0.0, use_random_negatives=False, use_hard_negatives=False)
    value = apply(off, hand.queries, hand.positives, hand.batch(random_items=RANDOM, hard_items=HARD),
                  hand.encode)["retrieval"]
    assert torch.equal(value, plain)
    assert hand.encode.encoded == 0  # nothing extra was encoded


def test_ranking_part_by_hand_and_total(hand):
    # row 0 stage list: 10 (level 2, score 2), 5 (level 1, score 1), 7 (level 0, score 0)
    # row 1: 11 (level 2, score 1), 7 (level 0, score -1), 11 again as a random: dropped (it is the clicked item)
    stages = {"stage_items": torch.tensor([[10, 5, 7], [11, 7, 11]]),
              "stage_levels": torch.tensor([[2, 1, 0], [2, 0, 0]])}
    loss = MultiGrainedLoss(temperature=1.0, beta=0.5, ranking={"temperature": 1.0})
    parts = apply(loss, hand.queries, hand.positives, hand.batch(**stages), hand.encode)
    # gain-gap weighted pairs: row 0 (0,1) w1 d1, (0,2) w2 d2, (1,2) w1 d1; row 1 (0,1) w2 d2
    ranking = (2 * softplus(-1.0) + 4 * softplus(-2.0)) / 6
    retrieval = (cross_entropy([2.0, 0.0], 0) + cross_entropy([0.0, 1.0], 1)) / 2
    assert parts["ranking"].item() == pytest.approx(ranking, rel=1e-6)
    assert parts["retrieval"].item() == pytest.approx(retrieval, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(retrieval + 0.5 * ranking, rel=1e-6)
    assert not parts["ranking"].requires_grad  # reported detached; the gradient flows through "loss"


def test_random_stage_and_hard_items_are_encoded_once_in_one_call(hand):
    stages = {"stage_items": torch.tensor([[10, 5, 7], [11, 7, 0]]),
              "stage_levels": torch.tensor([[2, 1, 0], [2, 0, 0]])}
    apply(MultiGrainedLoss(temperature=1.0, beta=1.0), hand.queries, hand.positives,
          hand.batch(random_items=RANDOM, hard_items=HARD, **stages), hand.encode)
    assert hand.encode.calls == 1
    assert hand.encode.encoded == 5  # distinct items 0 (also the clamped padding), 5, 7, 10, 11


def test_beta_zero_does_not_encode_stage_items(hand):
    stages = {"stage_items": torch.tensor([[10, 5], [11, 7]]), "stage_levels": torch.tensor([[2, 1], [2, 0]])}
    apply(MultiGrainedLoss(temperature=1.0, beta=0.0), hand.queries, hand.positives, hand.batch(**stages),
          hand.encode)
    assert hand.encode.encoded == 0


def test_gradients_reach_queries_and_positives(hand):
    queries = hand.queries.clone().requires_grad_(True)
    positives = hand.positives.clone().requires_grad_(True)
    stages = {"stage_items": torch.tensor([[10, 5, 7], [11, 7, 5]]),
              "stage_levels": torch.tensor([[2, 1, 0], [2, 0, 1]])}
    apply(MultiGrainedLoss(temperature=1.0, beta=1.0), queries, positives, hand.batch(**stages), hand.encode)[
        "loss"].backward()
    assert queries.grad.abs().sum() > 0 and positives.grad.abs().sum() > 0


def test_stage_ranking_needs_the_stage_fields(hand):
    with pytest.raises(ValueError, match="stage_items"):
        apply(MultiGrainedLoss(beta=1.0), hand.queries, hand.positives, hand.batch(), hand.encode)


@pytest.mark.parametrize("settings, word", [({"temperature": 0.0}, "temperature"), ({"beta": -0.1}, "beta"),
                                            ({"head_weight": -1.0}, "head_weight")])
def test_rejects_bad_settings(settings, word):
    with pytest.raises(ValueError, match=word):
        MultiGrainedLoss(**settings)


def test_drop_conflicting_randoms_per_row():
    items = torch.tensor([[3, 3, 4, -1, -1], [4, 6, 4, 6, 6]])
    levels = torch.tensor([[0, 0, 1, -1, -1], [0, 0, 2, 0, 3]])
    # row 0: item 3 is random twice and never higher: both stay; padding stays padding
    # row 1: item 4 is random and also level 2 -> dropped; item 6 is random twice and also level 3 -> both dropped
    assert drop_conflicting_randoms(items, levels).tolist() == [[0, 0, 1, -1, -1], [-1, -1, 2, -1, 3]]


def test_drop_conflicting_randoms_keeps_higher_levels_that_repeat():
    # an item at two positive levels is not a random conflict: nothing changes
    levels = torch.tensor([[2, 1, 0]])
    assert torch.equal(drop_conflicting_randoms(torch.tensor([[5, 5, 8]]), levels), levels)
