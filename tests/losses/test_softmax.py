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
    append_hard_logits,
    in_batch_logits,
    softmax_cross_entropy,
)


class TableModule:
    """Stands in for a RetrievalModule: item i is row i of a fixed table; counts the items it encodes."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.encoded = 0

    def encode_item_indices(self, indices: torch.Tensor) -> torch.Tensor:
        self.encoded += indices.numel()
        return self.table[indices.clamp(min=0)]


def cross_entropy(logits: list[float], target: int) -> float:
    finite = [v for v in logits if v != float("-inf")]
    return -logits[target] + math.log(sum(math.exp(v) for v in finite))


# items: 5 = (1, 1), 7 = (0, -1), 10 = (2, 0), 11 = (0, 1); item 0 (what padding encodes) = (9, 9)
TABLE = torch.zeros(12, 2)
TABLE[0] = torch.tensor([9.0, 9.0])
TABLE[5] = torch.tensor([1.0, 1.0])
TABLE[7] = torch.tensor([0.0, -1.0])
TABLE[10] = torch.tensor([2.0, 0.0])
TABLE[11] = torch.tensor([0.0, 1.0])
QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
POS_ITEM = torch.tensor([10, 11])
POSITIVES = TABLE[POS_ITEM]  # in-batch logits q @ p.T = [[2, 0], [0, 1]]
# row 0: item 5 scores 1, then padding; row 1: item 7 scores -1, then its own positive (item 11)
HARD = torch.tensor([[5, -1], [7, 11]])
ROW0 = [2.0, 0.0, 1.0, float("-inf")]
ROW1 = [0.0, 1.0, -1.0, float("-inf")]


def batch(**extra) -> dict[str, torch.Tensor]:
    return {"pos_item": POS_ITEM, **extra}


def test_weighted_mean_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    value = softmax_cross_entropy(logits, torch.arange(2), 1.0, torch.tensor([1.0, 0.5]))
    expected = (cross_entropy([2, 0], 0) + 0.5 * cross_entropy([0, 1], 1)) / 1.5
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_hard_columns_by_hand():
    logits = append_hard_logits(QUERIES @ POSITIVES.T, QUERIES, TABLE[HARD], batch(hard_items=HARD))
    assert logits.tolist() == [ROW0, ROW1]  # padding and the row's own positive are -inf


def test_in_batch_softmax_with_hard_items_and_weights_by_hand():
    module = TableModule(TABLE)
    loss = InBatchSoftmaxLoss(temperature=1.0)
    value = loss(QUERIES, POSITIVES, batch(hard_items=HARD, pos_weight=torch.tensor([1.0, 0.5])), module)["loss"]
    expected = (cross_entropy(ROW0, 0) + 0.5 * cross_entropy(ROW1, 1)) / 1.5
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert module.encoded == 4  # each distinct hard item once: 0 (padding), 5, 7, 11


def test_use_hard_negatives_false_ignores_them():
    module = TableModule(TABLE)
    plain = InBatchSoftmaxLoss(temperature=1.0)(QUERIES, POSITIVES, batch(), module)["loss"]
    off = InBatchSoftmaxLoss(temperature=1.0, use_hard_negatives=False)(QUERIES, POSITIVES,
                                                                      batch(hard_items=HARD), module)["loss"]
    assert torch.equal(plain, off) and module.encoded == 0


def test_mixed_hard_negatives_mix_with_hard_columns_by_hand():
    # candidates per row: 3 columns besides the target; hard_fraction 0.3 -> 1 hard negative per row.
    # row 0: the hard item (1) beats column 1 (0): mixed .5 * 2 + .5 * 1; row 1: column 0 (0): .5 * 1 + .5 * 0
    loss = MixedHardNegativesLoss(temperature=1.0, hard_fraction=0.3, mix_low=0.5, mix_high=0.5)
    weights = torch.tensor([1.0, 0.5])
    value = loss(QUERIES, POSITIVES, batch(hard_items=HARD, pos_weight=weights), TableModule(TABLE))
    expected = (cross_entropy(ROW0 + [1.5], 0) + 0.5 * cross_entropy(ROW1 + [0.5], 1)) / 1.5
    assert value["loss"].item() == pytest.approx(expected, rel=1e-6)
    in_batch = (cross_entropy(ROW0, 0) + 0.5 * cross_entropy(ROW1, 1)) / 1.5
    assert value["in_batch_loss"].item() == pytest.approx(in_batch, rel=1e-6)


def test_every_softmax_loss_takes_the_same_hard_columns_and_weights():
    torch.manual_seed(0)
    queries, table = torch.randn(4, 3), torch.randn(20, 3)
    pos_item = torch.tensor([1, 2, 3, 4])
    data = {"pos_item": pos_item, "random_items": torch.tensor([9, 2, 15]),
            "hard_items": torch.tensor([[5, 6, -1], [7, 2, 8], [-1, -1, -1], [3, 4, 12]]),
            "pos_weight": torch.tensor([1.0, 0.5, 1.0, 0.5])}
    positives, module = table[pos_item], TableModule(table)
    # MultiGrained also masks a random item equal to the row's positive (item 2 in row 1): compare without it
    plain = {k: v for k, v in data.items() if k != "random_items"}
    reference = InBatchSoftmaxLoss(temperature=0.1)(queries, positives, plain, module)["loss"]
    multi = MultiGrainedLoss(temperature=0.1, beta=0.0)(queries, positives, plain, module)["retrieval"]
    hybrid = HybridLoss(temperature=0.1, triplet_weight=0.0)(queries, positives, plain, module)["softmax"]
    mixed = MixedHardNegativesLoss(temperature=0.1, hard_fraction=0.0)(queries, positives, plain, module)["loss"]
    for value in (multi, hybrid, mixed):
        torch.testing.assert_close(value, reference, rtol=0, atol=0)


def test_triplet_takes_a_hard_item_when_it_is_the_closest_negative():
    # q0 = (1, 0): in-batch negative p1 = (0, 1) at cosine distance 1; hard item 5 = (1, 1) at 1 - 1/sqrt(2)
    module = TableModule(TABLE)
    loss = HybridLoss(margin=0.5, triplet_weight=1.0, skip_same_query=False)
    hard_vectors = TABLE[HARD]
    triplet = loss.triplet(QUERIES, POSITIVES, batch(hard_items=HARD), module, None, hard_vectors)
    # row 0: d(q0, p0) = 0, d(q0, item 5) = 1 - 1/sqrt(2) -> hinge .5 - .2929; row 1: d(q1, p1) = 0, the
    # closest allowed negative is p0 = (2, 0) at distance 1 (item 7 at 2; item 11 is its positive) -> 0
    assert triplet.item() == pytest.approx((0.5 - (1 - 1 / math.sqrt(2))) / 2, rel=1e-5)


# -- without the new keys, values are exactly those of the code before them ---------------------------------
@pytest.fixture
def random_batch():
    torch.manual_seed(1)
    table = torch.randn(30, 8)
    pos_item = torch.tensor([3, 7, 7, 12, 20, 4])
    data = {"pos_item": pos_item, "random_items": torch.tensor([5, 7, 29, 0])}
    return torch.randn(6, 8), table[pos_item], data, TableModule(table)


def test_in_batch_softmax_is_bit_identical_without_new_keys(random_batch):
    queries, positives, data, module = random_batch
    value = InBatchSoftmaxLoss(temperature=0.05)(queries, positives, data, module)["loss"]
    logits, targets = in_batch_logits(queries, positives, data["pos_item"], module.table[data["random_items"]])
    assert torch.equal(value, F.cross_entropy(logits / 0.05, targets))


def test_mixed_hard_negatives_is_bit_identical_without_new_keys(random_batch):
    queries, positives, data, module = random_batch
    loss = MixedHardNegativesLoss(temperature=2.0, hard_fraction=0.2)
    torch.manual_seed(5)
    value = loss(queries, positives, data, module)["loss"]
    logits, targets = in_batch_logits(queries, positives, data["pos_item"], module.table[data["random_items"]])
    torch.manual_seed(5)
    alpha = loss.sample_alpha(len(logits), 2, logits.device)  # ceil(0.2 * 9 candidates) = 2
    mixed = mixed_hard_negative_logits(logits, targets, 2, alpha)
    assert torch.equal(value, F.cross_entropy(torch.cat([logits, mixed], dim=1) / 2.0, targets))


def test_hybrid_is_bit_identical_without_new_keys(random_batch):
    queries, positives, data, module = random_batch
    parts = HybridLoss(temperature=0.05, margin=0.2, triplet_weight=0.5, skip_same_query=False)(
        queries, positives, data, module)
    randoms = module.table[data["random_items"]]
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
    queries, positives, data, module = random_batch
    value = MultiGrainedLoss(temperature=0.05, beta=0.0)(queries, positives, data, module)["retrieval"]
    randoms = module.table[data["random_items"]]
    logits, targets = in_batch_logits(queries, positives, data["pos_item"], randoms)
    hit = data["pos_item"][:, None] == data["random_items"][None, :]
    logits = torch.cat([logits[:, :-4], logits[:, -4:].masked_fill(hit, float("-inf"))], dim=1)
    assert torch.equal(value, F.cross_entropy(logits / 0.05, targets))
