"""MGDSPR's loss: temperature and mixed hard negatives, on hand-checkable examples."""

from __future__ import annotations

import math

import pytest
import torch

from retrieval_zoo.losses import LOSSES, build_loss
from retrieval_zoo.losses.mixed_hard_negatives import (
    MixedHardNegativesLoss,
    mixed_hard_negative_logits,
    n_hard_negatives,
)

# q @ p.T = [[2, 0, 1], [0, 1, -1], [2, 1, 0]]; the diagonal holds each query's positive
QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
POSITIVES = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
BATCH = {"pos_item": torch.tensor([10, 11, 12])}


def cross_entropy(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_registered():
    assert LOSSES["mixed_hard_negatives"] is MixedHardNegativesLoss
    assert isinstance(build_loss("mixed_hard_negatives", temperature=2.0), MixedHardNegativesLoss)


def test_mixed_logits_by_hand():
    logits = QUERIES @ POSITIVES.T
    alpha = torch.full((3, 1), 0.5)
    mixed = mixed_hard_negative_logits(logits, torch.arange(3), 1, alpha)
    # row 0: hardest negative is column 2 (score 1): 0.5 * 2 + 0.5 * 1; row 1: column 0 (0): 0.5 * 1 + 0.5 * 0;
    # row 2: column 0 (2): 0.5 * 0 + 0.5 * 2
    assert mixed.tolist() == [[1.5], [0.5], [1.0]]


def test_mixed_alpha_per_negative():
    logits = QUERIES @ POSITIVES.T
    alpha = torch.tensor([[0.4, 0.6], [0.5, 0.5], [0.6, 0.4]])
    mixed = mixed_hard_negative_logits(logits, torch.arange(3), 2, alpha)
    # row 0 negatives by score: column 2 (1), column 1 (0); positive 2
    assert mixed[0].tolist() == pytest.approx([0.4 * 2 + 0.6 * 1, 0.6 * 2 + 0.4 * 0])
    # row 2: column 0 (2), column 1 (1); positive 0
    assert mixed[2].tolist() == pytest.approx([0.6 * 0 + 0.4 * 2, 0.4 * 0 + 0.6 * 1])


def test_loss_by_hand():
    loss = MixedHardNegativesLoss(temperature=1.0, hard_fraction=0.5, mix_low=0.5, mix_high=0.5)
    value = loss(QUERIES, POSITIVES, BATCH)
    expected = (cross_entropy([2, 0, 1, 1.5], 0) + cross_entropy([0, 1, -1, 0.5], 1)
                + cross_entropy([2, 1, 0, 1.0], 2)) / 3
    assert value["loss"].item() == pytest.approx(expected, rel=1e-6)
    in_batch = (cross_entropy([2, 0, 1], 0) + cross_entropy([0, 1, -1], 1) + cross_entropy([2, 1, 0], 2)) / 3
    assert value["in_batch_loss"].item() == pytest.approx(in_batch, rel=1e-6)


def test_mixing_in_logit_space_equals_mixing_vectors():
    """q . (a p + (1 - a) h) = a q.p + (1 - a) q.h: same values and same gradients as building I_mix."""
    torch.manual_seed(0)
    q = torch.randn(6, 4, requires_grad=True)
    p = torch.randn(6, 4, requires_grad=True)
    alpha = torch.rand(6, 2)
    logits = q @ p.T
    fast = mixed_hard_negative_logits(logits, torch.arange(6), 2, alpha)
    negatives = logits.detach().clone().fill_diagonal_(float("-inf"))
    hard = p[negatives.topk(2, dim=1).indices]  # [6, 2, 4]
    mixed_items = alpha[..., None] * p[:, None, :] + (1 - alpha[..., None]) * hard
    slow = (q[:, None, :] * mixed_items).sum(-1)
    assert torch.allclose(fast, slow, atol=1e-6)
    grad_fast = torch.autograd.grad(fast.sum(), (q, p))
    grad_slow = torch.autograd.grad(slow.sum(), (q, p))
    for a, b in zip(grad_fast, grad_slow, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_duplicate_positives_are_never_hard_negatives():
    # all three rows share one catalogue item: no real negative is left, the mixed logits are -inf
    loss = MixedHardNegativesLoss(temperature=1.0, hard_fraction=1.0)
    value = loss(QUERIES, POSITIVES, {"pos_item": torch.tensor([7, 7, 7])})
    assert value["loss"].item() == pytest.approx(0.0, abs=1e-7)


def test_temperature_two_by_two():
    q = torch.eye(2)
    p = torch.eye(2)  # logits [[1, 0], [0, 1]]
    plain = MixedHardNegativesLoss(temperature=1.0, hard_fraction=0.0)(q, p, {"pos_item": torch.arange(2)}, None)
    smooth = MixedHardNegativesLoss(temperature=2.0, hard_fraction=0.0)(q, p, {"pos_item": torch.arange(2)}, None)
    assert plain["loss"].item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)
    assert smooth["loss"].item() == pytest.approx(math.log(1 + math.exp(-0.5)), rel=1e-6)


def test_larger_temperature_flattens_the_distribution():
    logits = QUERIES @ POSITIVES.T
    entropies = []
    for tau in (0.5, 1.0, 2.0, 4.0):
        probabilities = (logits / tau).softmax(dim=1)
        entropies.append(float(-(probabilities * probabilities.log()).sum(1).mean()))
    assert entropies == sorted(entropies)
    # where the positive already ranks first, a flatter softmax gives a larger loss (less confident)
    eye = torch.eye(2)
    losses = [MixedHardNegativesLoss(temperature=tau, hard_fraction=0.0)(eye, eye, {"pos_item": torch.arange(2)},
                                                                         None)["loss"] for tau in (1.0, 2.0, 4.0)]
    assert losses[0] < losses[1] < losses[2] < math.log(2)


def test_alpha_is_drawn_in_range_per_negative():
    loss = MixedHardNegativesLoss(mix_low=0.4, mix_high=0.6)
    torch.manual_seed(0)
    alpha = loss.sample_alpha(64, 25, torch.device("cpu"))
    assert alpha.shape == (64, 25)
    assert alpha.min() >= 0.4 and alpha.max() <= 0.6
    assert alpha.std() > 0.03  # drawn per negative, not one value


def test_n_hard_scales_with_the_batch():
    assert n_hard_negatives(255, 0.1) == 26  # batch 256: ceil(25.5)
    assert n_hard_negatives(2, 0.1) == 1
    assert n_hard_negatives(255, 0.0) == 0
    assert n_hard_negatives(0, 0.5) == 0


def test_gradients_reach_queries_and_items():
    torch.manual_seed(1)
    q = torch.randn(8, 4, requires_grad=True)
    p = torch.randn(8, 4, requires_grad=True)
    value = MixedHardNegativesLoss(hard_fraction=0.25)(q, p, {"pos_item": torch.arange(8)}, None)["loss"]
    value.backward()
    assert torch.isfinite(value)
    assert q.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="temperature"):
        MixedHardNegativesLoss(temperature=0.0)
    with pytest.raises(ValueError, match="mix_low"):
        MixedHardNegativesLoss(mix_low=0.7, mix_high=0.6)
    with pytest.raises(ValueError, match="hard_fraction"):
        MixedHardNegativesLoss(hard_fraction=2.0)
