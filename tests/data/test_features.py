"""Behaviour histories: only actions strictly before the search, in the right windows, padded with -1."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.features import (
    FeatureSettings,
    build_catalog,
    build_units,
    check_fields,
    fields_to_build,
)


def _behaviour_dataset() -> ProductSearchDataset:
    products = pl.DataFrame({
        "product_id": [f"p{i}" for i in range(5)], "title": [f"item {i}" for i in range(5)],
        "description": [""] * 5, "bullets": [""] * 5, "brand": ["b"] * 5, "color": [""] * 5,
        "category": ["c"] * 5, "shop_id": ["s1", "s1", "s2", "s2", "s3"],
    })
    queries = pl.DataFrame({"query_id": ["q1"], "query": ["item"], "split": ["test"], "group": [None]},
                           schema_overrides={"group": pl.Utf8})
    judgments = pl.DataFrame({"query_id": ["q1"], "product_id": ["p1"], "label": ["E"]})
    searches = pl.DataFrame({"search_id": ["s_a", "s_b", "s_c"], "query_id": ["q1"] * 3, "user_id": ["u1", "u1", "u2"],
                             "timestamp": [5.0, 40.0, 1.0], "split": ["train", "test", "test"]})
    interactions = pl.DataFrame({
        "user_id": ["u1", "u1", "u1", "u1", "u1"],
        "product_id": ["p0", "p1", "p2", "p3", "p4"],
        "timestamp": [1.0, 5.0, 5.0, 20.0, 41.0],
        "action": ["click", "click", "exposure", "order", "click"],
        "search_id": [None, "s_a", "s_a", None, "s_b"],
        "position": [None, 0, 1, None, 0],
    }, schema_overrides={"position": pl.Int32, "search_id": pl.Utf8})
    return ProductSearchDataset("behaviour", products, queries, judgments, searches=searches,
                                interactions=interactions)


def test_histories_hold_earlier_actions_only_in_their_windows():
    data = _behaviour_dataset()
    settings = FeatureSettings(realtime_length=3, short_term_days=10, short_term_length=3, long_term_days=30,
                               long_term_length=3)
    catalog = build_catalog(data, {"item_text"}, settings)
    units = build_units(data, {"query_text", "user", "user_history", "query_history"}, settings, catalog)
    realtime = units.tensors["hist_realtime"].numpy()
    # s_a at t=5: only the click on p0 at t=1 (the click at t=5 belongs to the search itself)
    np.testing.assert_array_equal(realtime[0], [-1, -1, 0])
    # s_b at t=40: clicks p0, p1 and the order p3, exposures never count, p4 (t=41) is later
    np.testing.assert_array_equal(realtime[1], [0, 1, 3])
    # short-term (10 days before t=40): nothing; long-term (30 days): only the order at t=20
    np.testing.assert_array_equal(units.tensors["hist_short"].numpy()[1], [-1, -1, -1])
    np.testing.assert_array_equal(units.tensors["hist_long"].numpy()[1], [-1, -1, 3])
    np.testing.assert_array_equal(units.tensors["hist_long_action"].numpy()[1], [0, 0, 2])
    # u2 has no history at all
    np.testing.assert_array_equal(realtime[2], [-1, -1, -1])
    assert units.tensors["user_index"].tolist() == [1, 1, 2]
    # the previous query of u1's second search is its first search's query
    history = units.tensors["hist_query_tokens"].numpy()
    assert history[1, -1].any() and not history[0].any()


def test_missing_required_field_names_what_the_dataset_offers(label_dataset):
    with pytest.raises(DatasetError, match="needs \\['user_history'\\].*offers"):
        check_fields(label_dataset, {"query_text", "user_history"}, "somemodel")


def test_fields_to_build_checks_the_required_and_keeps_the_optional_on_offer(label_dataset):
    fields = fields_to_build(label_dataset, {"query_text", "item_text"}, {"user_history", "item_brand"}, "somemodel")
    assert fields == {"query_text", "item_text", "item_brand"}  # label data has no behaviour: no user_history
    with pytest.raises(DatasetError, match="model 'somemodel' needs \\['user_history'\\]"):
        fields_to_build(label_dataset, {"query_text", "user_history"}, set(), "somemodel")


def test_schema_violations_are_one_line_errors(label_dataset):
    bad = label_dataset.products.with_columns(pl.lit("p0").alias("product_id"))
    with pytest.raises(DatasetError, match="duplicate product_id"):
        ProductSearchDataset("bad", bad, label_dataset.queries, label_dataset.judgments)
    empty = label_dataset.queries.with_columns(pl.lit("  ").alias("query"))
    with pytest.raises(DatasetError, match="empty query"):
        ProductSearchDataset("bad", label_dataset.products, empty, label_dataset.judgments)
    labels = label_dataset.judgments.with_columns(pl.lit("X").alias("label"))
    with pytest.raises(DatasetError, match="allowed"):
        ProductSearchDataset("bad", label_dataset.products, label_dataset.queries, labels)
