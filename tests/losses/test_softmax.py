"""The shared softmax helpers: graded positives (pos_weight) and mined hard negatives (hard_items), by hand, and
bit-identical values for batches without either key."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from retrieval_zoo.losses.hybrid import (
    HybridLoss,
    distance_matrix,
    hardest_index,
    in_batch_candidates,
    pairwise_distance,
    triplet_term,
)
from retrieval_zoo.losses.mixed_hard_negatives import MixedHardNegativesLoss, mixed_hard_negative_logits
from retrieval_zoo.losses.multi_grained import MultiGrainedLoss
from retrieval_zoo.losses.softmax import (
    InBatchSoftmaxLoss,
    ItemVectors,
    append_hard_logits,
    in_batch_logits,
    softmax_cross_entropy,
)


def apply(loss, queries: torch.Tensor, positives: torch.Tensor, batch: dict, encode) -> dict:
    """What RetrievalModule does: encode the items the loss asks for, then call it with tensors only."""
    return loss(queries, positives, batch, loss.extra_vectors(batch, encode))


def cross_entropy(logits: list[float], target: int) -> float:
    finite = [v for v in logits if v != float("-inf")]
    return -logits[target] + math.log(sum(math.exp(v) for v in finite))


# the `hand` fixture (conftest.py): queries (1, 0), (0, 1); positives 10 = (2, 0), 11 = (0, 1), in-batch logits
# [[2, 0], [0, 1]]; item 5 = (1, 1), 7 = (0, -1), item 0 (what padding encodes) = (9, 9)
# row 0: item 5 scores 1, then padding; row 1: item 7 scores -1, then its own positive (item 11)
HARD = torch.tensor([[5, -1], [7, 11]])
ROW0 = [2.0, 0.0, 1.0, float("-inf")]
ROW1 = [0.0, 1.0, -1.0, float("-inf")]


def test_weighted_mean_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    value = softmax_cross_entropy(logits, torch.arange(2), 1.0, torch.tensor([1.0, 0.5]))
    expected = (cross_entropy([2, 0], 0) + 0.5 * cross_entropy([0, 1], 1)) / 1.5
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_hard_columns_by_hand(hand):
    queries, positives = hand.queries, hand.positives
    logits = append_hard_logits(queries @ positives.T, queries, hand.table[HARD], hand.batch(hard_items=HARD))
    assert logits.tolist() == [ROW0, ROW1]  # padding and the row's own positive are -inf


def test_in_batch_softmax_with_hard_items_and_weights_by_hand(hand):
    loss = InBatchSoftmaxLoss(temperature=1.0)
    data = hand.batch(hard_items=HARD, pos_weight=torch.tensor([1.0, 0.5]))
    value = apply(loss, hand.queries, hand.positives, data, hand.encode)["loss"]
    expected = (cross_entropy(ROW0, 0) + 0.5 * cross_entropy(ROW1, 1)) / 1.5
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert hand.encode.encoded == 4  # each distinct hard item once: 0 (padding), 5, 7, 11


def test_use_hard_negatives_false_ignores_them(hand):
    plain = apply(InBatchSoftmaxLoss(temperature=1.0), hand.queries, hand.positives, hand.batch(), hand.encode)
    off = apply(InBatchSoftmaxLoss(temperature=1.0, use_hard_negatives=False), hand.queries, hand.positives,
                hand.batch(hard_items=HARD), hand.encode)
    assert torch.equal(plain["loss"], off["loss"]) and hand.encode.encoded == 0


def test_mixed_hard_negatives_mix_with_hard_columns_by_hand(hand):
    # candidates per row: 3 columns besides the target; hard_fraction 0.3 -> 1 hard negative per row.
    # row 0: the hard item (1) beats column 1 (0): mixed .5 * 2 + .5 * 1; row 1: column 0 (0): .5 * 1 + .5 * 0
    loss = MixedHardNegativesLoss(temperature=1.0, hard_fraction=0.3, mix_low=0.5, mix_high=0.5)
    weights = torch.tensor([1.0, 0.5])
    value = apply(loss, hand.queries, hand.positives, hand.batch(hard_items=HARD, pos_weight=weights), hand.encode)
    expected = (cross_entropy(ROW0 + [1.5], 0) + 0.5 * cross_entropy(ROW1 + [0.5], 1)) / 1.5
    assert value["loss"].item() == pytest.approx(expected, rel=1e-6)
    in_batch = (cross_entropy(ROW0, 0) + 0.5 * cross_entropy(ROW1, 1)) / 1.5
    assert value["in_batch_loss"].item() == pytest.approx(in_batch, rel=1e-6)


def test_every_softmax_loss_takes_the_same_hard_columns_and_weights(table_encoder):
    torch.manual_seed(0)
    queries, table = torch.randn(4, 3), torch.randn(20, 3)
    pos_item = torch.tensor([1, 2, 3, 4])
    data = {"pos_item": pos_item, "random_items": torch.tensor([9, 2, 15]),
            "hard_items": torch.tensor([[5, 6, -1], [7, 2, 8], [-1, -1, -1], [3, 4, 12]]),
            "pos_weight": torch.tensor([1.0, 0.5, 1.0, 0.5])}
    positives, encode = table[pos_item], table_encoder(table)
    # MultiGrained also masks a random item equal to the row's positive (item 2 in row 1): compare without it
    plain = {k: v for k, v in data.items() if k != "random_items"}
    reference = apply(InBatchSoftmaxLoss(temperature=0.1), queries, positives, plain, encode)["loss"]
    multi = apply(MultiGrainedLoss(temperature=0.1, beta=0.0), queries, positives, plain, encode)["retrieval"]
    hybrid = apply(HybridLoss(temperature=0.1, triplet_weight=0.0), queries, positives, plain, encode)["softmax"]
    mixed = apply(MixedHardNegativesLoss(temperature=0.1, hard_fraction=0.0), queries, positives, plain,
                  encode)["loss"]
    for value in (multi, hybrid, mixed):
        torch.testing.assert_close(value, reference, rtol=0, atol=0)


def test_triplet_takes_a_hard_item_when_it_is_the_closest_negative(hand):
    # q0 = (1, 0): in-batch negative p1 = (0, 1) at cosine distance 1; hard item 5 = (1, 1) at 1 - 1/sqrt(2)
    loss = HybridLoss(margin=0.5, triplet_weight=1.0, skip_same_query=False)
    hard_vectors = hand.table[HARD]
    triplet = loss.triplet(hand.queries, hand.positives, hand.batch(hard_items=HARD), ItemVectors(hard=hard_vectors))
    # row 0: d(q0, p0) = 0, d(q0, item 5) = 1 - 1/sqrt(2) -> hinge .5 - .2929; row 1: d(q1, p1) = 0, the
    # closest allowed negative is p0 = (2, 0) at distance 1 (item 7 at 2; item 11 is its positive) -> 0
    assert triplet.item() == pytest.approx((0.5 - (1 - 1 / math.sqrt(2))) / 2, rel=1e-5)


# -- without the new keys, values are exactly those of the code before them ---------------------------------
@pytest.fixture
def random_batch(table_encoder):
    torch.manual_seed(1)
    table = torch.randn(30, 8)
    pos_item = torch.tensor([3, 7, 7, 12, 20, 4])
    data = {"pos_item": pos_item, "random_items": torch.tensor([5, 7, 29, 0])}
    return torch.randn(6, 8), table[pos_item], data, table_encoder(table)


def test_in_batch_softmax_is_bit_identical_without_new_keys(random_batch):
    queries, positives, data, encode = random_batch
    value = apply(InBatchSoftmaxLoss(temperature=0.05), queries, positives, data, encode)["loss"]
    logits, targets = in_batch_logits(queries, positives, data["pos_item"], encode.table[data["random_items"]])
    assert torch.equal(value, F.cross_entropy(logits / 0.05, targets))


def test_mixed_hard_negatives_is_bit_identical_without_new_keys(random_batch):
    queries, positives, data, encode = random_batch
    loss = MixedHardNegativesLoss(temperature=2.0, hard_fraction=0.2)
    torch.manual_seed(5)
    value = apply(loss, queries, positives, data, encode)["loss"]
    logits, targets = in_batch_logits(queries, positives, data["pos_item"], encode.table[data["random_items"]])
    torch.manual_seed(5)
    alpha = loss.sample_alpha(len(logits), 2, logits.device)  # ceil(0.2 * 9 candidates) = 2
    mixed = mixed_hard_negative_logits(logits, targets, 2, alpha)
    assert torch.equal(value, F.cross_entropy(torch.cat([logits, mixed], dim=1) / 2.0, targets))


def test_hybrid_is_bit_identical_without_new_keys(random_batch):
    queries, positives, data, encode = random_batch
    parts = apply(HybridLoss(temperature=0.05, margin=0.2, triplet_weight=0.5, skip_same_query=False),
                  queries, positives, data, encode)
    randoms = encode.table[data["random_items"]]
    logits, targets = in_batch_logits(queries, positives, data["pos_item"], randoms)
    softmax = F.cross_entropy(logits / 0.05, targets)
    candidates = torch.cat([positives, randoms])
    allowed = torch.cat([in_batch_candidates(data, False),
                         data["random_items"][None, :] != data["pos_item"][:, None]], dim=1)
    index, valid = hardest_index(distance_matrix(queries, candidates, "cosine"), allowed)
    triplet = triplet_term(pairwise_distance(queries, positives, "cosine"),
                           pairwise_distance(queries, candidates[index], "cosine"), valid.float(), 0.2)
    assert torch.equal(parts["softmax"], softmax) and torch.equal(parts["triplet"], triplet)
    assert torch.equal(parts["loss"], 1.0 * softmax + 0.5 * triplet)


def test_multi_grained_retrieval_is_bit_identical_without_new_keys(random_batch):
    queries, positives, data, encode = random_batch
    value = apply(MultiGrainedLoss(temperature=0.05, beta=0.0), queries, positives, data, encode)["retrieval"]
    randoms = encode.table[data["random_items"]]
    logits, targets = in_batch_logits(queries, positives, data["pos_item"], randoms)
    hit = data["pos_item"][:, None] == data["random_items"][None, :]
    logits = torch.cat([logits[:, :-4], logits[:, -4:].masked_fill(hit, float("-inf"))], dim=1)
    assert torch.equal(value, F.cross_entropy(logits / 0.05, targets))
