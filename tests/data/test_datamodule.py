"""Unit-grouped training batches (data.group_by_unit): the sampler, the deduplicated query batch, the masking of
the same search's other positives, and that encoding each search once changes nothing else in the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval_zoo.data import load_dataset
from retrieval_zoo.data.datamodule import RetrievalDataModule, UnitGroupedSampler
from retrieval_zoo.data.features import dataset_fields
from retrieval_zoo.losses.softmax import in_batch_logits
from retrieval_zoo.models import build_model, load_config
from retrieval_zoo.runner import data_settings

UNITS = np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 5])


def runs_of(units: list[int]) -> list[int]:
    """The units in the order their runs of examples appear (a unit split into two runs appears twice)."""
    return [u for i, u in enumerate(units) if i == 0 or units[i - 1] != u]


def test_sampler_visits_every_example_once_with_each_units_examples_together():
    sampler = UnitGroupedSampler(UNITS, seed=0)
    for _ in range(3):  # every epoch
        order = list(sampler)
        assert sorted(order) == list(range(len(UNITS)))
        runs = runs_of(UNITS[order].tolist())
        assert sorted(runs) == sorted(set(UNITS.tolist()))  # one run per unit: never split


def test_sampler_reshuffles_units_each_epoch_and_is_seeded():
    first, second = UnitGroupedSampler(UNITS, seed=3), UnitGroupedSampler(UNITS, seed=3)
    epochs = [runs_of(UNITS[list(first)].tolist()) for _ in range(4)]
    assert [runs_of(UNITS[list(second)].tolist()) for _ in range(4)] == epochs
    assert len({tuple(e) for e in epochs}) > 1


def test_sampler_groups_units_that_arrive_interleaved():
    units = np.array([2, 0, 2, 1, 0, 2])
    order = list(UnitGroupedSampler(units, seed=1))
    assert sorted(runs_of(units[order].tolist())) == [0, 1, 2]
    assert sorted(order) == list(range(6))


def test_same_unit_positives_are_masked_other_columns_kept():
    queries, positives = torch.randn(4, 3), torch.randn(4, 3)
    pos_item, pair_unit = torch.tensor([10, 11, 12, 10]), torch.tensor([7, 7, 8, 9])
    plain, targets = in_batch_logits(queries, positives, pos_item)
    masked, _ = in_batch_logits(queries, positives, pos_item, pair_unit=pair_unit)
    assert targets.tolist() == [0, 1, 2, 3]
    assert masked[0, 1] == masked[1, 0] == float("-inf")  # rows 0 and 1: two positives of one search
    assert masked[0, 3] == masked[3, 0] == float("-inf")  # same item (masked with or without units)
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[[0, 1, 0, 3], [1, 0, 3, 0]] = False
    assert torch.equal(masked[keep], plain[keep])
    assert torch.isfinite(masked.diagonal()).all()


@pytest.fixture(scope="module")
def grouped():
    """A small MGDSPR (behaviour, fusion, mixed hard negatives) on simshop-tiny, batches grouped by unit."""
    dataset = load_dataset("simshop-tiny")
    config = load_config("mgdspr", overrides={"model": {"dim": 32, "heads": 4, "word_buckets": 4096,
                                                        "char_buckets": 4096},
                                              "data": {"group_by_unit": True, "batch_size": 64}})
    module = build_model(config)
    fields = module.required_fields | (module.optional_fields & dataset_fields(dataset))
    datamodule = RetrievalDataModule(dataset, fields, data_settings(config["data"]), seed=0)
    module.attach(datamodule)
    return module, datamodule


def test_grouped_batch_carries_each_unit_once_and_maps_every_example_to_it(grouped):
    _, datamodule = grouped
    batch = next(iter(datamodule.train_dataloader()))
    units = batch["pair_unit"]
    assert len(units) == 64 and len(batch["query_batch"]["unit_index"]) == len(units.unique())
    assert len(units.unique()) < len(units)  # simshop searches have several engaged items
    inner = runs_of(units.tolist())[1:-1]  # the first and last unit may continue in the next/previous batch
    assert len(inner) == len(set(inner))
    for name, tensor in batch["query_batch"].items():
        assert torch.equal(tensor[batch["query_row"]], batch[name]), name


def test_encoding_each_search_once_gives_the_per_example_loss(grouped):
    module, datamodule = grouped
    module.eval()  # no dropout, so the two paths see the same network
    batch = next(iter(datamodule.train_dataloader()))
    per_example = {k: v for k, v in batch.items() if k not in ("query_batch", "query_row")}
    torch.manual_seed(0)
    once = module._losses(batch)["loss"]
    torch.manual_seed(0)  # the same mixed-negative draws
    again = module._losses(per_example)["loss"]
    torch.testing.assert_close(once, again)


def test_mgdspr_default_groups_by_unit():
    assert load_config("mgdspr")["data"]["group_by_unit"] is True
    assert load_config("light_two_tower")["data"]["group_by_unit"] is False


# -- graded positives and mined hard negatives in every training batch ---------------------------------------
@pytest.fixture(scope="module")
def tiny_batches():
    """simshop-tiny's data module (behaviour data) with the default data settings, hard negatives mined (opted in:
    by default behaviour data is not mined, see the next test)."""
    config = load_config("light_two_tower", overrides=["data.hard_negatives.label_data_only=false"])
    datamodule = RetrievalDataModule(load_dataset("simshop-tiny"), {"query_text", "item_text"},
                                     data_settings(config["data"]), seed=0)
    datamodule.setup()
    return datamodule


def test_behaviour_data_is_not_mined_by_default_and_every_batch_names_its_units():
    datamodule = RetrievalDataModule(load_dataset("simshop-tiny"), {"query_text", "item_text"},
                                     data_settings(load_config("light_two_tower")["data"]), seed=0)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    assert "hard_items" not in batch
    assert torch.equal(batch["pair_unit"], batch["unit_index"])


def test_training_batches_carry_pos_weight_and_hard_items(tiny_batches):
    per_example = tiny_batches.settings.hard_negatives.per_example
    assert per_example == 4
    batch = next(iter(tiny_batches.train_dataloader()))
    size = len(batch["pos_item"])
    assert batch["pos_weight"].shape == (size,) and batch["pos_weight"].dtype == torch.float32
    assert batch["hard_items"].shape == (size, per_example) and batch["hard_items"].dtype == torch.int64
    assert torch.equal(batch["pos_weight"], torch.ones(size))  # behaviour data: every click weighs 1
    hard = batch["hard_items"]
    assert ((hard >= -1) & (hard < len(tiny_batches.catalog))).all() and (hard >= 0).any()
    assert not (hard == batch["pos_item"][:, None]).any()


def test_hard_items_are_fresh_each_batch_and_never_a_train_click_of_the_query(tiny_batches):
    units = tiny_batches.units
    clicked: dict[str, set[int]] = {}
    for unit in units.indices_of_split("train"):
        items, levels = tiny_batches.stages.of(int(unit))
        clicked.setdefault(units.query_ids[unit], set()).update(items[levels >= 2].tolist())
    loader = tiny_batches.train_dataloader()
    seen = []
    for batch, _ in zip(loader, range(3), strict=False):
        for unit, row in zip(batch["unit_index"].tolist(), batch["hard_items"].tolist(), strict=True):
            assert not set(row) & clicked[units.query_ids[unit]]
        seen.append(batch["hard_items"])
    assert not torch.equal(seen[0], seen[1])


def test_validation_batches_have_weights_but_no_mined_negatives(tiny_batches):
    batch = next(iter(tiny_batches.val_dataloader()))
    assert "pos_weight" in batch and "hard_items" not in batch


def test_label_data_weights_substitutes_by_positive_weights(label_dataset):
    settings = data_settings({**load_config("light_two_tower")["data"],
                              "positive_weights": {"E": 1.0, "S": 0.25}, "batch_size": 1000})
    assert settings.positive_labels == ["E", "S"]
    datamodule = RetrievalDataModule(label_dataset, {"query_text", "item_text"}, settings)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    labels = {(row["query_id"], row["product_id"]): row["label"] for row in label_dataset.judgments.to_dicts()}
    units, catalog = datamodule.units, datamodule.catalog
    expected = [{"E": 1.0, "S": 0.25}[labels[units.query_ids[u], catalog.product_ids[i]]]
                for u, i in zip(batch["unit_index"].tolist(), batch["pos_item"].tolist(), strict=True)]
    assert batch["pos_weight"].tolist() == expected and {0.25, 1.0} == set(expected)


def test_exact_only_positives_all_weigh_one(label_dataset):
    settings = data_settings({**load_config("light_two_tower")["data"], "positive_labels": ["E"]})
    datamodule = RetrievalDataModule(label_dataset, {"query_text", "item_text"}, settings)
    datamodule.setup()
    assert (datamodule.train_pairs.weights == 1.0).all()


@pytest.mark.parametrize("section, message", [
    ({"positive_labels": ["S"]}, r"must be \[E\] or \[E, S\]"),
    ({"positive_weights": {"E": 1.0}}, r"positive_weights lacks \['S'\]"),
    ({"positive_weights": {"E": 1.0, "S": 0.0}}, "weights > 0"),
])
def test_bad_positive_settings_are_one_line_errors(section, message):
    with pytest.raises(ValueError, match=message):
        data_settings({**load_config("light_two_tower")["data"], **section})


def test_small_data_shrinks_the_batch_to_keep_a_minimum_of_steps_per_epoch():
    config = load_config("light_two_tower")["data"]
    datamodule = RetrievalDataModule(load_dataset("simshop-tiny"), {"query_text", "item_text"},
                                     data_settings({**config, "batch_size": 1024, "min_steps_per_epoch": 8}), seed=0)
    datamodule.setup()
    examples = datamodule.n_train_examples
    assert datamodule.batch_size == -(-examples // 8) < 1024
    assert len(datamodule.train_dataloader()) >= 8
    roomy = RetrievalDataModule(load_dataset("simshop-tiny"), {"query_text", "item_text"},
                                data_settings({**config, "batch_size": 16, "min_steps_per_epoch": 8}), seed=0)
    roomy.setup()
    assert roomy.batch_size == 16  # enough steps already: the configured size stands
