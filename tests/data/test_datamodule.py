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
