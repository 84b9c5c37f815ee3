"""The stage ranking loss (local comparison) and MMSE's combined multi-grained loss, on hand-checkable inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from retrieval_zoo.losses import LOSSES, InBatchSoftmaxLoss
from retrieval_zoo.losses.multi_grained import MultiGrainedLoss, drop_conflicting_randoms, encode_unique
from retrieval_zoo.losses.stage_ranking import StageRankingLoss
from retrieval_zoo.models.base import RetrievalModule


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_pairwise_logistic_exact_value():
    # levels 3, 1, 0 -> gains 3, 1, 0: pairs (0,1) gap 2, (0,2) gap 3, (1,2) gap 1
    loss = StageRankingLoss(mode="pairwise_logistic", temperature=1.0)
    value = loss(torch.tensor([[0.5, 0.2, 0.0]]), torch.tensor([[3, 1, 0]]))
    expected = (2 * softplus(-0.3) + 3 * softplus(-0.5) + 1 * softplus(-0.2)) / 6
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_logistic_temperature_and_uniform_weights():
    loss = StageRankingLoss(mode="pairwise_logistic", temperature=0.5, pair_weighting="uniform")
    value = loss(torch.tensor([[0.5, 0.2, 0.0]]), torch.tensor([[3, 1, 0]]))
    expected = (softplus(-0.6) + softplus(-1.0) + softplus(-0.4)) / 3
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_margin_exact_value():
    # required gap = margin x gain gap: (0,1) 0.2 - (-0.1) = 0.3 (w 2); (0,2) 0.3 - 0.1 = 0.2 (w 3); (1,2) met
    loss = StageRankingLoss(mode="pairwise_margin", margin=0.1)
    value = loss(torch.tensor([[0.1, 0.2, 0.0]]), torch.tensor([[3, 1, 0]]))
    assert value.item() == pytest.approx((2 * 0.3 + 3 * 0.2) / 6, rel=1e-6)


def test_listwise_exact_value():
    # targets 3/4, 1/4, 0; log softmax of [1, 0, 0]
    loss = StageRankingLoss(mode="listwise", temperature=1.0)
    value = loss(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[3, 1, 0]]))
    assert value.item() == pytest.approx(math.log(math.e + 2) - 0.75, rel=1e-6)


@pytest.mark.parametrize("mode", ["pairwise_logistic", "pairwise_margin", "listwise"])
def test_padding_is_ignored(mode):
    loss = StageRankingLoss(mode=mode, temperature=0.1)
    scores = torch.tensor([[0.3, -0.2, 0.1, 0.4]])
    levels = torch.tensor([[2, 3, 0, 1]])
    padded_scores = torch.cat([scores, torch.tensor([[99.0, -99.0]])], dim=1)
    padded_levels = torch.cat([levels, torch.tensor([[-1, -1]])], dim=1)
    assert loss(padded_scores, padded_levels).item() == pytest.approx(loss(scores, levels).item(), rel=1e-6)


def test_single_level_gains_make_no_pair_between_ordered_and_clicked():
    loss = StageRankingLoss(level_gains=[0, 0, 1, 1], temperature=1.0)
    # ordered below clicked costs nothing extra: only engaged-vs-rest pairs exist
    a = loss(torch.tensor([[0.9, 0.5, 0.0, 0.0]]), torch.tensor([[3, 2, 1, 0]]))
    b = loss(torch.tensor([[0.5, 0.9, 0.0, 0.0]]), torch.tensor([[3, 2, 1, 0]]))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert a.item() == pytest.approx((2 * softplus(-0.9) + 2 * softplus(-0.5)) / 4, rel=1e-6)


def test_no_pairs_gives_zero_with_a_gradient():
    scores = torch.tensor([[0.3, 0.1]], requires_grad=True)
    value = StageRankingLoss()(scores, torch.tensor([[2, -1]]))
    assert value.item() == 0.0
    value.backward()
    assert scores.grad is not None


def test_rows_are_pooled_over_the_batch():
    loss = StageRankingLoss(temperature=1.0, pair_weighting="uniform")
    scores = torch.tensor([[0.5, 0.0], [0.0, 0.2]])
    value = loss(scores, torch.tensor([[2, 1], [0, 3]]))
    assert value.item() == pytest.approx((softplus(-0.5) + softplus(-0.2)) / 2, rel=1e-6)


def test_bad_settings_fail_with_the_valid_choices():
    with pytest.raises(ValueError, match="valid modes"):
        StageRankingLoss(mode="lambda")
    with pytest.raises(ValueError, match="4 values"):
        StageRankingLoss(level_gains=[0, 1])


# -- the combined loss ------------------------------------------------------------------------------------
class TableModule(nn.Module):
    """A stand-in RetrievalModule: item i's vector is row i of a table; counts encoded items."""

    def __init__(self, n_items: int = 10, dim: int = 4):
        super().__init__()
        self.table = nn.Embedding(n_items, dim)
        self.encoded = 0

    def encode_item_indices(self, indices: torch.Tensor) -> torch.Tensor:
        self.encoded += indices.numel()
        return self.table(indices.clamp(min=0))


def apply(loss, queries: torch.Tensor, positives: torch.Tensor, batch: dict, module: TableModule) -> dict:
    """What RetrievalModule does: encode the items (and query heads) the loss asks for, then call it with tensors."""
    model = getattr(module, "model", None)
    heads = getattr(model, "query_head_vectors", None)
    encode_heads = None if heads is None else lambda: RetrievalModule.query_rows(heads, batch)
    return loss(queries, positives, batch, loss.extra_vectors(batch, module.encode_item_indices, encode_heads))


def toy_batch() -> dict[str, torch.Tensor]:
    return {"pos_item": torch.tensor([0, 1, 2]), "random_items": torch.tensor([7, 8, 9]),
            "stage_items": torch.tensor([[0, 3, 5, -1], [1, 4, 1, 6], [2, 2, 3, 3]]),
            "stage_levels": torch.tensor([[3, 1, 0, -1], [2, 1, 0, 0], [2, 1, 1, 0]])}


def test_registered_by_name():
    assert LOSSES["multi_grained"] is MultiGrainedLoss


def test_beta_zero_is_the_plain_in_batch_softmax():
    torch.manual_seed(0)
    module = TableModule()
    queries = torch.randn(3, 4)
    batch = toy_batch()
    positives = module.table(batch["pos_item"])
    ours = apply(MultiGrainedLoss(temperature=0.5, beta=0.0), queries, positives, batch, module)
    reference = apply(InBatchSoftmaxLoss(temperature=0.5), queries, positives, batch, module)
    assert ours["loss"].item() == pytest.approx(reference["loss"].item(), rel=1e-6)
    assert set(ours) == {"loss", "retrieval", "ranking"} and ours["ranking"].item() == 0.0


def test_total_is_retrieval_plus_beta_ranking():
    torch.manual_seed(0)
    module = TableModule()
    queries = torch.randn(3, 4)
    batch = toy_batch()
    positives = module.table(batch["pos_item"])
    parts = apply(MultiGrainedLoss(temperature=0.5, beta=0.3, ranking={"temperature": 1.0}), queries, positives,
                  batch, module)
    scores = torch.einsum("bd,bsd->bs", queries, module.table(batch["stage_items"].clamp(min=0)))
    # random items that are also in the row at a higher level are dropped: row 1 item 1, row 2 item 3
    levels = torch.tensor([[3, 1, 0, -1], [2, 1, -1, 0], [2, 1, 1, -1]])
    ranking = StageRankingLoss(temperature=1.0)(scores, levels)
    assert parts["ranking"].item() == pytest.approx(ranking.item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(parts["retrieval"].item() + 0.3 * ranking.item(), rel=1e-6)


def test_a_random_negative_equal_to_the_positive_is_masked():
    module = TableModule()
    queries = torch.randn(3, 4)
    batch = {**toy_batch(), "random_items": torch.tensor([7, 1, 9])}  # item 1 is row 1's positive
    positives = module.table(batch["pos_item"])
    loss = MultiGrainedLoss(temperature=1.0, beta=0.0)
    masked = apply(loss, queries, positives, batch, module)["retrieval"]
    # rows 0 and 2 contrast with all three random items, row 1 not with its own positive (column 3 + 1)
    full = torch.cat([queries @ positives.T, queries @ module.table(torch.tensor([7, 1, 9])).T], dim=1)
    full[1, 4] = float("-inf")
    expected = torch.nn.functional.cross_entropy(full, torch.arange(3))
    assert masked.item() == pytest.approx(expected.item(), rel=1e-6)


def test_drop_conflicting_randoms():
    levels = drop_conflicting_randoms(torch.tensor([[4, 5, 4, 6, -1]]), torch.tensor([[2, 1, 0, 0, -1]]))
    assert levels.tolist() == [[2, 1, -1, 0, -1]]


def test_encode_unique_encodes_each_item_once_and_keeps_shapes():
    module = TableModule()
    a, b = encode_unique(module.encode_item_indices, [torch.tensor([3, 3, 5]), torch.tensor([[5, -1], [3, 7]])])
    assert module.encoded == 4  # 0 (the clamped padding), 3, 5, 7
    assert a.shape == (3, 4) and b.shape == (2, 2, 4)
    assert torch.equal(b[1, 1], module.table.weight[7])


def test_shared_randoms_join_every_list_at_level_zero():
    module = TableModule()
    queries = torch.randn(3, 4)
    batch = {**toy_batch(), "stage_items": torch.tensor([[0, 3], [1, 4], [2, 5]]),
             "stage_levels": torch.tensor([[3, 1], [2, 1], [2, 1]])}
    positives = module.table(batch["pos_item"])
    loss = MultiGrainedLoss(temperature=1.0, beta=1.0, shared_randoms_per_query=2, ranking={"temperature": 1.0})
    torch.manual_seed(5)
    ranking = apply(loss, queries, positives, batch, module)["ranking"]
    torch.manual_seed(5)
    pick = torch.randint(0, 3, (3, 2))
    items = torch.cat([batch["stage_items"], batch["random_items"][pick]], 1)
    levels = torch.cat([batch["stage_levels"], torch.zeros(3, 2, dtype=torch.long)], 1)
    scores = torch.einsum("bd,bsd->bs", queries, module.table(items))
    assert ranking.item() == pytest.approx(StageRankingLoss(temperature=1.0)(scores, levels).item(), rel=1e-6)


class HeadsModel(nn.Module):
    """A stand-in MMSE: fixed per-head query vectors (the batch's ``heads``) and no parameters of its own."""

    def query_head_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["heads"]


def test_head_weight_adds_each_heads_own_retrieval_loss():
    torch.manual_seed(0)
    module = TableModule()
    module.model = HeadsModel()
    heads = torch.randn(3, 2, 4)
    batch = {**toy_batch(), "heads": heads}
    positives = module.table(batch["pos_item"])
    fused = heads.mean(1)
    plain = MultiGrainedLoss(temperature=0.5, beta=0.0)
    parts = apply(MultiGrainedLoss(temperature=0.5, beta=0.0, head_weight=0.5), fused, positives, batch, module)
    alone = [apply(plain, heads[:, h], positives, batch, module)["retrieval"].item() for h in range(2)]
    assert parts["per_head"].item() == pytest.approx(sum(alone) / 2, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(parts["retrieval"].item() + 0.25 * sum(alone), rel=1e-6)


def test_head_weight_needs_a_model_with_heads():
    module = TableModule()
    module.model = nn.Linear(4, 4)
    batch = toy_batch()
    with pytest.raises(ValueError, match="head_weight"):
        apply(MultiGrainedLoss(beta=0.0, head_weight=1.0), torch.randn(3, 4), module.table(batch["pos_item"]), batch,
              module)
    with pytest.raises(ValueError, match="head_weight"):
        MultiGrainedLoss(head_weight=-1.0)
