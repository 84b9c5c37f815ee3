"""Multi-stage mining (data/stages.py) and the stage lists of a training batch (data/datamodule.py), exact."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.data.datamodule import DataSettings, RetrievalDataModule
from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.data.stages import LABEL_TO_LEVEL, STAGE_LEVELS, mine_from_labels, mine_from_logs

PRODUCTS = [f"p{i}" for i in range(8)]


def interactions(rows: list[tuple[str, str, str | None, str]]) -> pl.DataFrame:
    """rows of (search_id, product_id, action); timestamps and positions in row order."""
    return pl.DataFrame(
        {"user_id": ["u1"] * len(rows), "product_id": [r[1] for r in rows],
         "timestamp": [0.001 * i for i in range(len(rows))], "action": [r[2] for r in rows],
         "search_id": [r[0] for r in rows], "position": [i % 5 for i in range(len(rows))]},
        schema_overrides={"search_id": pl.Utf8, "position": pl.Int32},
    )


# s1: p3 exposed, clicked and ordered in one search (keeps 3); p1 exposed + clicked (+ collected: not a level);
#     p5 and p0 exposed only (1). s2: p1 exposed only (1); p6 clicked without a logged exposure (2).
# s3: nothing logged. An order outside any search and a row of an unknown product are ignored.
LOG = [
    ("s1", "p5", "exposure"), ("s1", "p3", "exposure"), ("s1", "p1", "exposure"), ("s1", "p0", "exposure"),
    ("s1", "p3", "click"), ("s1", "p1", "click"), ("s1", "p1", "collect"), ("s1", "p3", "order"),
    ("s2", "p1", "exposure"), ("s2", "p6", "click"),
    (None, "p7", "order"), ("s2", "p999", "click"),
]


def test_levels_are_ordered_as_in_the_paper():
    assert STAGE_LEVELS == {"random": 0, "unclicked": 1, "clicked": 2, "ordered": 3}


def test_mine_from_logs_keeps_the_highest_level_per_search_and_item():
    stages = mine_from_logs(interactions(LOG), ["s1", "s2", "s3"], PRODUCTS)
    np.testing.assert_array_equal(stages.offsets, [0, 4, 6, 6])
    items, levels = stages.of(0)
    # sorted by level (high first), then catalogue index
    np.testing.assert_array_equal(items, [3, 1, 0, 5])
    np.testing.assert_array_equal(levels, [3, 2, 1, 1])
    items, levels = stages.of(1)
    np.testing.assert_array_equal(items, [6, 1])
    np.testing.assert_array_equal(levels, [2, 1])
    assert len(stages.of(2)[0]) == 0
    assert 7 not in stages.items  # the order without a search is no stage signal


def test_exposures_without_click_are_level_one_and_counts_are_exact():
    stages = mine_from_logs(interactions(LOG), ["s1", "s2", "s3"], PRODUCTS)
    assert np.bincount(stages.levels, minlength=4).tolist() == [0, 3, 2, 1]


def test_pairs_at_least_gives_the_training_positives():
    stages = mine_from_logs(interactions(LOG), ["s1", "s2", "s3"], PRODUCTS)
    units, items = stages.pairs_at_least(2)
    assert list(zip(units.tolist(), items.tolist(), strict=True)) == [(0, 3), (0, 1), (1, 6)]


def test_mine_from_labels_maps_esci_to_levels():
    assert LABEL_TO_LEVEL == {"E": 3, "S": 2, "C": 1, "I": 1}
    judgments = pl.DataFrame({"query_id": ["q1", "q1", "q1", "q1", "q2"],
                              "product_id": ["p2", "p4", "p1", "p0", "p4"], "label": ["I", "E", "C", "S", "E"]})
    stages = mine_from_labels(judgments, ["q1", "q2", "q3"], PRODUCTS)
    np.testing.assert_array_equal(stages.offsets, [0, 4, 5, 5])
    items, levels = stages.of(0)
    np.testing.assert_array_equal(items, [4, 0, 1, 2])
    np.testing.assert_array_equal(levels, [3, 2, 1, 1])
    np.testing.assert_array_equal(stages.of(1)[1], [3])


# -- the stage lists of a training batch ----------------------------------------------------------------
def behaviour_dataset() -> ProductSearchDataset:
    products = pl.DataFrame({
        "product_id": PRODUCTS, "title": [f"item {i} red shoe" for i in range(8)], "description": [""] * 8,
        "bullets": [""] * 8, "brand": ["acme"] * 8, "color": ["red"] * 8, "category": ["shoes"] * 8,
        "shop_id": [None] * 8,
    }, schema_overrides={"shop_id": pl.Utf8})
    queries = pl.DataFrame({"query_id": ["q1", "q2", "q3"], "query": ["red shoe", "shoe", "blue shoe"],
                            "split": ["train", "train", "test"], "group": [None] * 3},
                           schema_overrides={"group": pl.Utf8})
    judgments = pl.DataFrame({"query_id": ["q1", "q3"], "product_id": ["p3", "p2"], "label": ["E", "E"]})
    searches = pl.DataFrame({"search_id": ["s1", "s2", "s3"], "query_id": ["q1", "q2", "q3"],
                             "user_id": ["u1"] * 3, "timestamp": [0.0, 0.005, 0.02],
                             "split": ["train", "train", "test"]})
    return ProductSearchDataset("stages-toy", products, queries, judgments, searches, interactions(LOG[:-2]))


@pytest.fixture(scope="module")
def stage_batch():
    # one batch holds every example (min_steps_per_epoch=1: the small-data batch shrink is tested elsewhere)
    settings = DataSettings(batch_size=8, stage_list_size=8, stage_random_items=2, min_steps_per_epoch=1)
    module = RetrievalDataModule(behaviour_dataset(), {"query_hashed", "item_hashed", "stages"}, settings, seed=0)
    module.setup()
    return module, next(iter(module.train_dataloader()))


def test_batch_has_one_example_per_engaged_item(stage_batch):
    module, batch = stage_batch
    # s1: ordered p3 and clicked p1; s2: clicked p6 (s3 is a test search)
    pairs = sorted(zip(batch["unit_index"].tolist(), batch["pos_item"].tolist(), strict=True))
    assert pairs == [(0, 1), (0, 3), (1, 6)]
    assert batch["stage_items"].shape == batch["stage_levels"].shape == (3, 8)


def test_stage_lists_engaged_first_then_unclicked_then_random_then_padding(stage_batch):
    _, batch = stage_batch
    for unit, items, levels in zip(batch["unit_index"].tolist(), batch["stage_items"].tolist(),
                                   batch["stage_levels"].tolist(), strict=True):
        if unit == 0:   # 2 engaged, 2 unclicked, 2 random, 2 padding
            assert items[:2] == [3, 1] and levels[:2] == [3, 2]
            assert sorted(items[2:4]) == [0, 5] and levels[2:4] == [1, 1]
            assert levels[4:] == [0, 0, -1, -1] and items[6:] == [-1, -1]
            assert all(0 <= i < 8 for i in items[4:6])
        else:           # 1 engaged, 1 unclicked, 2 random, 4 padding
            assert items[:2] == [6, 1] and levels[:2] == [2, 1]
            assert levels[2:] == [0, 0, -1, -1, -1, -1] and items[4:] == [-1] * 4
            assert all(0 <= i < 8 for i in items[2:4])


def test_engaged_items_fill_the_list_before_unclicked_ones():
    settings = DataSettings(batch_size=8, stage_list_size=3, stage_random_items=1, min_steps_per_epoch=1)
    module = RetrievalDataModule(behaviour_dataset(), {"query_hashed", "item_hashed", "stages"}, settings, seed=0)
    module.setup()
    batch = next(iter(module.train_dataloader()))
    row = batch["unit_index"].tolist().index(0)
    assert batch["stage_items"][row, :2].tolist() == [3, 1]
    assert batch["stage_levels"][row].tolist() == [3, 2, 0]
