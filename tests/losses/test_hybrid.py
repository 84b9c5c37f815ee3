"""MRSE's hybrid loss: the triplet term on hand-checkable vectors, its negatives, and the softmax part."""

from __future__ import annotations

import math

import pytest
import torch

from retrieval_zoo.losses import LOSSES, build_loss
from retrieval_zoo.losses.hybrid import HybridLoss, triplet_term
from retrieval_zoo.losses.softmax import InBatchSoftmaxLoss


class TableModule:
    """Stands in for a RetrievalModule: item i is row i of a fixed table."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def encode_item_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.table[indices.clamp(min=0)]


def apply(loss, queries: torch.Tensor, positives: torch.Tensor, batch: dict, module: TableModule) -> dict:
    """What RetrievalModule does: encode the items the loss asks for, then call it with tensors only."""
    return loss(queries, positives, batch, loss.extra_vectors(batch, module.encode_item_indices))


# q0 = (1, 0), q1 = (0, 1), q2 = (-1, 0); positives p0 = (.8, .6), p1 = (.6, .8), p2 = (0, 1). Cosine distances:
#   d(q0, p0) = .2, d(q0, p1) = .4, d(q0, p2) = 1     -> hardest negative p1: max(0, .5 + .2 - .4) = .3
#   d(q1, p1) = .2, d(q1, p0) = .4, d(q1, p2) = 0     -> hardest negative p2: max(0, .5 + .2 - 0)  = .7
#   d(q2, p2) = 1,  d(q2, p0) = 1.8, d(q2, p1) = 1.6  -> hardest negative p1: max(0, .5 + 1 - 1.6) = 0
QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
POSITIVES = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])


def test_triplet_term_on_a_hand_checked_example():
    loss = HybridLoss(margin=0.5, triplet_weight=1.0)
    batch = {"pos_item": torch.tensor([0, 1, 2])}
    value = loss.triplet(QUERIES, POSITIVES, batch)
    assert value.item() == pytest.approx((0.3 + 0.7 + 0.0) / 3, abs=1e-6)


def test_euclidean_distance_variant():
    # unit vectors: |q - p|^2 = 2 (1 - cos). Row 0: d(q0, p0) = sqrt(.4), its only negative p1 at sqrt(.8);
    # row 1 is the mirror image. Both hinges: 1 + sqrt(.4) - sqrt(.8)
    loss = HybridLoss(margin=1.0, distance="euclidean")
    value = loss.triplet(QUERIES[:2], POSITIVES[:2], {"pos_item": torch.tensor([0, 1])})
    assert value.item() == pytest.approx(1.0 + math.sqrt(0.4) - math.sqrt(0.8), abs=1e-5)


def test_duplicates_and_same_query_rows_are_not_negatives():
    loss = HybridLoss(margin=0.5)
    # rows 1 and 2 share the positive item: row 1's only other candidate is row 0 (d(q1, p0) = .4)
    same_item = {"pos_item": torch.tensor([0, 1, 1])}
    positives = torch.stack([POSITIVES[0], POSITIVES[1], POSITIVES[1]])
    queries = QUERIES[:2].repeat(2, 1)[:3]  # q0, q1, q0
    value = loss.triplet(queries, positives, same_item)
    # row 0: negatives p1 (.4) -> .3; row 1: p0 (.4) -> .5 + .2 - .4 = .3; row 2 (q0, p1): p0 (.2) -> .5 + .4 - .2
    assert value.item() == pytest.approx((0.3 + 0.3 + 0.7) / 3, abs=1e-6)
    # with query tokens rows 0 and 2 are the same query: row 0 keeps p1 (row 1's), row 2 has no candidate left
    # (p0 is its own query's positive, p1 its own item) and drops out of the mean
    tokens = {"query_tokens": torch.tensor([[5, 6], [7, 0], [5, 6]])}
    value = loss.triplet(queries, positives, {**same_item, **tokens})
    assert value.item() == pytest.approx((0.3 + 0.3) / 2, abs=1e-6)


def test_triplet_term_ignores_rows_without_a_negative():
    value = triplet_term(torch.tensor([0.5, 0.1]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), margin=0.2)
    assert value.item() == pytest.approx(0.7)
    assert triplet_term(torch.ones(2), torch.zeros(2), torch.zeros(2), 0.2).item() == 0.0


def test_stage_negatives_take_the_hardest_unclicked_item_of_the_row():
    table = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    module = TableModule(table)
    # row 0: positive item 0; stage items 1 (unclicked, d=.4), 3 (clicked: not a negative), 2 (unclicked, d=1)
    batch = {"pos_item": torch.tensor([0]), "stage_items": torch.tensor([[1, 3, 2, -1]]),
             "stage_levels": torch.tensor([[1, 2, 1, -1]])}
    loss = HybridLoss(margin=0.5)
    value = loss.triplet(QUERIES[:1], table[:1], batch, loss.extra_vectors(batch, module.encode_item_indices))
    assert value.item() == pytest.approx(0.5 + 0.2 - 0.4, abs=1e-6)


def test_hybrid_is_weighted_softmax_plus_triplet():
    torch.manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    positives = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    table = torch.nn.functional.normalize(torch.randn(10, 4), dim=-1)
    batch = {"pos_item": torch.arange(6), "random_items": torch.tensor([6, 7, 8, 9])}
    module = TableModule(torch.cat([positives, table[6:]]))
    hybrid = HybridLoss(temperature=0.1, softmax_weight=1.0, triplet_weight=0.25, margin=0.3)
    parts = apply(hybrid, queries, positives, batch, module)
    softmax = apply(InBatchSoftmaxLoss(temperature=0.1), queries, positives, batch, module)["loss"]
    assert parts["softmax"].item() == pytest.approx(softmax.item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(softmax.item() + 0.25 * parts["triplet"].item(), rel=1e-6)
    only = apply(HybridLoss(temperature=0.1, triplet_weight=0.0), queries, positives, batch, module)
    assert only["triplet"].item() == 0.0 and only["loss"].item() == pytest.approx(softmax.item(), rel=1e-6)


def test_registered_and_validated():
    assert LOSSES["hybrid"] is HybridLoss
    assert isinstance(build_loss("hybrid", margin=0.1), HybridLoss)
    with pytest.raises(ValueError, match="valid distances"):
        HybridLoss(distance="manhattan")
