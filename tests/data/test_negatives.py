"""Mined hard negatives on hand-made datasets: sources, positives excluded, only train units, the disk cache."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.data import negatives, text
from retrieval_zoo.data.datamodule import DataSettings, RetrievalDataModule
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.negatives import HardNegativeSettings, train_queries

TITLES = ["red running shoe", "blue running shoe", "red shoe polish", "red garden hose", "red shoe rack",
          "green lamp"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path))


def products(titles: list[str]) -> pl.DataFrame:
    n = len(titles)
    return pl.DataFrame({"product_id": [f"p{i}" for i in range(n)], "title": titles, "description": [""] * n,
                         "bullets": [""] * n, "brand": [""] * n, "color": [""] * n, "category": [""] * n,
                         "shop_id": [None] * n}, schema_overrides={"shop_id": pl.Utf8})


def queries() -> pl.DataFrame:
    return pl.DataFrame({"query_id": ["q0", "q1", "q2"], "query": ["red shoe", "red hose", "lamp"],
                         "split": ["train", "test", "train"], "group": [None] * 3},
                        schema_overrides={"group": pl.Utf8})


def judgments() -> pl.DataFrame:
    rows = [("q0", "p0", "E"), ("q0", "p1", "S"), ("q0", "p2", "C"), ("q0", "p3", "I"), ("q0", "p5", "C"),
            ("q1", "p3", "E"), ("q1", "p2", "I"), ("q2", "p5", "E"), ("q2", "p0", "I")]
    return pl.DataFrame(rows, schema=["query_id", "product_id", "label"], orient="row")


def label_data(titles: list[str] = TITLES) -> ProductSearchDataset:
    return ProductSearchDataset("negatives-labels", products(titles), queries(), judgments())


def behaviour_data() -> ProductSearchDataset:
    searches = pl.DataFrame({"search_id": ["s_a", "s_b", "s_c", "s_d"], "query_id": ["q0", "q0", "q0", "q2"],
                             "user_id": ["u1", "u2", "u3", "u1"], "timestamp": [1.0, 2.0, 3.0, 4.0],
                             "split": ["train", "train", "test", "train"]})
    interactions = pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u3", "u1"], "product_id": ["p0", "p2", "p1", "p4", "p5"],
        "timestamp": [1.0, 1.0, 2.0, 3.0, 4.0], "action": ["click", "exposure", "order", "click", "click"],
        "search_id": ["s_a", "s_a", "s_b", "s_c", "s_d"], "position": [0, 1, 0, 0, 0],
    }, schema_overrides={"position": pl.Int32})
    return ProductSearchDataset("negatives-logs", products(TITLES), queries(), judgments(), searches=searches,
                                interactions=interactions)


def mined(dataset: ProductSearchDataset, sources=("judged", "bm25"), relative_margin: float | None = None
          ) -> tuple[RetrievalDataModule, dict]:
    """The data module and, per unit id, its mined product ids (behaviour data opted in to mining; the
    false-negative filter off unless a ``relative_margin`` is given)."""
    settings = DataSettings(hard_negatives={"sources": list(sources), "depth": 50, "per_example": 2,
                                            "label_data_only": False, "relative_margin": relative_margin})
    datamodule = RetrievalDataModule(dataset, set(), settings)
    datamodule.setup()
    lists = datamodule.hard_negatives
    ids = datamodule.catalog.product_ids
    return datamodule, {unit: [ids[i] for i in lists.of(u)] for u, unit in enumerate(datamodule.units.unit_ids)}


def test_label_data_lists_hold_judged_and_bm25_items_never_positives():
    _, lists = mined(label_data())
    # q0 "red shoe": judged C/I p2, p3, p5 first, then BM25's p4; p0 (E) and p1 (S) are positives
    assert lists["q0"] == ["p2", "p3", "p5", "p4"]
    # q2 "lamp": judged I p0; BM25 finds only p5, its E item
    assert lists["q2"] == ["p0"]


def test_test_units_are_never_mined():
    datamodule, lists = mined(label_data())
    assert lists["q1"] == []
    _, texts = train_queries(datamodule.units)
    assert texts == ["red shoe", "lamp"]


def test_bm25_alone_leaves_out_items_without_a_matching_term():
    _, lists = mined(label_data(), sources=["bm25"])
    assert sorted(lists["q0"]) == ["p2", "p3", "p4"] and lists["q2"] == []  # in BM25 order


def test_behaviour_data_is_not_mined_unless_asked():
    settings = DataSettings(hard_negatives={"sources": ["bm25"], "depth": 50, "per_example": 2})
    datamodule = RetrievalDataModule(behaviour_data(), set(), settings)
    datamodule.setup()
    assert datamodule.hard_negatives is None


def test_behaviour_data_excludes_every_train_click_of_the_query_and_ignores_judgments():
    _, lists = mined(behaviour_data())
    # both train searches of q0 share one list without p0 (clicked in s_a) nor p1 (ordered in s_b); p4 was
    # clicked only in a test search, which must not leak into training; judged C/I items are not used
    assert lists["s_a"] == lists["s_b"] and sorted(lists["s_a"]) == ["p2", "p3", "p4"]
    assert lists["s_c"] == []
    assert lists["s_d"] == []  # "lamp": p5 is its click


def test_cache_hit_returns_identical_lists(tmp_path, monkeypatch):
    datamodule, first = mined(label_data())
    assert len(list((tmp_path / "hard_negatives").glob("bm25-*.npy"))) == 1

    def no_mining(*args):
        raise AssertionError("mined again instead of reading the cache")

    monkeypatch.setattr(negatives, "_bm25_top", no_mining)
    _, again = mined(label_data())
    assert again == first


def test_a_changed_item_text_invalidates_the_cache(tmp_path):
    _, before = mined(label_data())
    changed = [*TITLES[:4], "blue garden chair", TITLES[5]]
    _, after = mined(label_data(changed))
    assert len(list((tmp_path / "hard_negatives").glob("bm25-*.npy"))) == 2
    assert "p4" in before["q0"] and "p4" not in after["q0"]


def test_batches_sample_from_the_units_list():
    datamodule, lists = mined(label_data())
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["hard_items"].shape == (len(batch["pos_item"]), 2)
    ids = datamodule.catalog.product_ids
    for unit, row in zip(batch["unit_index"].tolist(), batch["hard_items"].tolist(), strict=True):
        picked = [ids[i] for i in row if i >= 0]
        assert len(set(picked)) == len(picked) == min(2, len(lists[datamodule.units.unit_ids[unit]]))
        assert set(picked) <= set(lists[datamodule.units.unit_ids[unit]])


@pytest.mark.parametrize("section, message", [
    ({"sources": ["bm25", "tfidf"]}, r"unknown sources \['tfidf'\]; valid sources: judged, bm25, minilm"),
    ({"depth": 0}, "depth >= 1"),
    ({"per_example": 4, "k": 3}, r"unknown keys \['k'\]"),
    ({"relative_margin": 1.5}, r"relative_margin must be in \[0, 1\) or null"),
])
def test_bad_settings_are_one_line_errors(section, message):
    with pytest.raises(DatasetError, match=message):
        DataSettings(hard_negatives=section)


def test_per_example_zero_turns_mining_off():
    settings = DataSettings(hard_negatives={"per_example": 0})
    datamodule = RetrievalDataModule(label_data(), set(), settings)
    datamodule.setup()
    assert datamodule.hard_negatives is None
    assert datamodule.mining_summary() == {}
    assert "hard_items" not in next(iter(datamodule.train_dataloader()))
    assert HardNegativeSettings(sources=[]).enabled is False


# -- the false-negative filter (relative_margin) ------------------------------------------------------------
def scored(monkeypatch, scores: dict[tuple[str, str], float]) -> None:
    """Frozen-MiniLM cosines replaced by ``scores`` keyed by (query text, product title); 0 elsewhere."""
    def pair_scores(keys, item_texts, query_texts):
        rows, items = divmod(keys, len(item_texts))
        return np.array([scores.get((query_texts[r], item_texts[i]), 0.0) for r, i in zip(rows, items, strict=True)],
                        dtype=np.float32)

    monkeypatch.setattr(negatives, "pair_scores", pair_scores)


def test_retrieved_candidates_close_to_the_positives_are_dropped_and_judged_ones_kept(monkeypatch):
    # "red shoe": positives p0 (0.8) and p1 (0.6), mean 0.7; at margin 0.05 a candidate must score <= 0.665
    scored(monkeypatch, {("red shoe", "red running shoe"): 0.8, ("red shoe", "blue running shoe"): 0.6,
                         ("red shoe", "red shoe rack"): 0.67, ("red shoe", "red shoe polish"): 0.9,
                         ("red shoe", "red garden hose"): 0.66})
    datamodule, lists = mined(label_data(), relative_margin=0.05)
    assert lists["q0"] == ["p2", "p3", "p5"]  # BM25's p4 (0.67) is dropped; judged p2 stays though it scores 0.9
    # the count the printed line gives is kept for the run's costs too: BM25's p4 and BM25's copy of p2 (the
    # judged list keeps its own)
    assert datamodule.mining_summary() | {"mining_seconds": 0} == {
        "mined_queries": 2, "mined_mean_length": 2.0, "mined_likely_false_negatives": 2, "mining_seconds": 0}
    _, retrieved_only = mined(label_data(), sources=["bm25"], relative_margin=0.05)
    assert sorted(retrieved_only["q0"]) == ["p3"]  # without the judged source p2 is a retrieved candidate too
    _, unfiltered = mined(label_data(), relative_margin=None)
    assert unfiltered["q0"] == ["p2", "p3", "p5", "p4"]


def test_a_query_without_positives_keeps_every_candidate(monkeypatch):
    # q1 becomes a train query judged I only: no positive to compare with, so nothing is filtered (and no NaN)
    scored(monkeypatch, {("red hose", "red garden hose"): 0.99})
    data = label_data()
    no_positive = ProductSearchDataset(
        "negatives-no-positive", data.products, data.queries.with_columns(pl.lit("train").alias("split")),
        data.judgments.filter(~((pl.col("query_id") == "q1") & (pl.col("label") == "E"))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, filtered = mined(no_positive, relative_margin=0.05)
    _, unfiltered = mined(no_positive, relative_margin=None)
    assert filtered["q1"] == unfiltered["q1"] and "p3" in filtered["q1"]


def test_the_filter_on_real_minilm_keeps_exactly_the_candidates_below_the_ceiling():
    datamodule, unfiltered = mined(label_data(), sources=["bm25"], relative_margin=None)
    _, filtered = mined(label_data(), sources=["bm25"], relative_margin=0.05)
    query, item = text.sentence_features(["red shoe"]), text.sentence_features(TITLES)
    cosine = dict(zip(datamodule.catalog.product_ids, (item @ query[0]).tolist(), strict=True))
    positives = np.mean([cosine["p0"], cosine["p1"]])
    ceiling = positives - 0.05 * abs(positives)
    assert filtered["q0"] == [p for p in unfiltered["q0"] if cosine[p] <= ceiling]
    assert len(filtered["q0"]) < len(unfiltered["q0"])  # "red shoe rack" is as close to "red shoe" as its positives
