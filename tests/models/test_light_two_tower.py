"""The light two-tower baseline (models/light_two_tower.py): hashed bags, bucket folding, padding, separate
towers, unit vectors, and the pretrained-sentence start."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrieval_zoo.models.light_two_tower import HashedBagTower, LightTwoTower, LightTwoTowerConfig


def small(**kwargs) -> LightTwoTower:
    torch.manual_seed(0)
    return LightTwoTower(LightTwoTowerConfig(**{"dim": 8, "hidden": 6, "n_buckets": 50, **kwargs}))


def test_fields_and_separate_towers():
    model = small()
    assert model.required_fields == {"query_hashed", "item_hashed"}
    assert model.query_tower.field == "query_hashed" and model.item_tower.field == "item_hashed"
    assert model.query_tower.bag.weight.data_ptr() != model.item_tower.bag.weight.data_ptr()
    assert not torch.equal(model.query_tower.bag.weight, model.item_tower.bag.weight)
    with_sentence = small(pretrained_sentence=True)
    assert with_sentence.required_fields == {"query_hashed", "item_hashed", "query_sentence", "item_sentence"}
    assert LightTwoTower.required_fields == {"query_hashed", "item_hashed"}  # the class attribute is untouched


def test_vectors_are_unit_length_with_the_configured_dim():
    model = small()
    ids = torch.tensor([[3, 7, 0, 0], [1, 2, 49, 0]])
    queries = model.encode_queries({"query_hashed": ids})
    items = model.encode_items({"item_hashed": ids})
    assert queries.shape == items.shape == (2, 8)
    torch.testing.assert_close(queries.norm(dim=1), torch.ones(2))
    assert not torch.allclose(queries, items)  # two towers, two functions


def test_bag_is_a_mean_that_ignores_padding():
    tower = small().query_tower
    one = tower({"query_hashed": torch.tensor([[5, 0, 0]])})
    same = tower({"query_hashed": torch.tensor([[5, 5, 0, 0, 0]])})
    torch.testing.assert_close(one, same)  # mean over the real ids, padding 0 left out
    bag = tower.bag(torch.tensor([[5, 9, 0]]))
    torch.testing.assert_close(bag, (tower.bag.weight[5] + tower.bag.weight[9])[None] / 2)


def test_ids_beyond_the_bucket_count_fold_into_range():
    tower = small().item_tower
    base = tower({"item_hashed": torch.tensor([[4, 11]])})
    folded = tower({"item_hashed": torch.tensor([[4 + 50, 11 + 3 * 50]])})  # data hashed into more buckets
    torch.testing.assert_close(base, folded)


def test_pretrained_sentence_starts_as_the_frozen_sentence_vector():
    # gate 0 and an identity skip at dim 384: the tower starts as the normalised MiniLM vector
    torch.manual_seed(0)
    tower = HashedBagTower("query_hashed", 50, 384, 6, "query_sentence")
    sentence = torch.randn(3, 384)
    out = tower({"query_hashed": torch.tensor([[1, 2], [3, 0], [4, 5]]), "query_sentence": sentence})
    torch.testing.assert_close(out, F.normalize(sentence, dim=-1), atol=1e-6, rtol=0)


def test_one_step_trains_the_bags_of_both_towers():
    model = small()
    query_ids, item_ids = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [7, 8]])
    scores = model.encode_queries({"query_hashed": query_ids}) @ model.encode_items({"item_hashed": item_ids}).T
    F.cross_entropy(scores / 0.1, torch.arange(2)).backward()
    for tower, ids in ((model.query_tower, query_ids), (model.item_tower, item_ids)):
        grad = tower.bag.weight.grad
        assert grad[ids.flatten()].abs().sum() > 0
        assert grad[0].abs().sum() == 0  # the padding row never moves
