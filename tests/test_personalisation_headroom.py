"""The history estimate of benchmarks/personalisation_headroom.py on a hand-built log (exact shares)."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pytest


@pytest.fixture(scope="module")
def headroom(load_benchmark):
    return load_benchmark("personalisation_headroom")


def hand_built_shop():
    products = pl.DataFrame({"product_id": ["pa1", "pa2", "pb1", "pc1"], "brand": ["A", "A", "B", "C"],
                             "color": ["red", None, "red", "blue"]})
    searches = pl.DataFrame({"search_id": ["s1", "s2", "s3"], "user_id": ["u1", "u1", "u2"],
                             "timestamp": [1.0, 5.0, 5.0]})
    interactions = pl.DataFrame({
        "user_id": ["u1", "u1", "u1", "u1", "u1", "u1", "u2"],
        "product_id": ["pa1", "pa2", "pb1", "pc1", "pb1", "pc1", "pa1"],
        "timestamp": [0.5, 2.0, 3.0, 4.0, 5.1, 6.0, 9.0],
        # an exposure never counts; s2's own click and u2's later order come after their search
        "action": ["click", "order", "collect", "exposure", "click", "click", "order"],
        "search_id": ["s0", "s1", "s1", "s1", "s2", "s9", "s8"],
    })
    return SimpleNamespace(products=products, searches=searches, interactions=interactions)


def test_history_affinity_is_the_share_of_earlier_engagements(headroom):
    run = pl.DataFrame({"q_id": ["s2"] * 4 + ["s3"], "doc_id": ["pa1", "pb1", "pc1", "pa2", "pa1"],
                        "score": [4.0, 3.0, 2.0, 1.0, 1.0]})
    by_brand = headroom.history_affinity(run, hand_built_shop(), ["brand"])
    values = {(r["q_id"], r["doc_id"]): r["affinity"] for r in by_brand.iter_rows(named=True)}
    # s2's history: pa1 (click), pa2 (order), pb1 (collect): brand A twice, B once
    assert values[("s2", "pa1")] == pytest.approx(2 / 3)
    assert values[("s2", "pa2")] == pytest.approx(2 / 3)
    assert values[("s2", "pb1")] == pytest.approx(1 / 3)
    assert values[("s2", "pc1")] == 0.0
    assert values[("s3", "pa1")] == 0.0  # u2 has no engagement before s3
    # colour: the history has red twice (pa1, pb1) and one missing; a missing colour never matches
    both = headroom.history_affinity(run, hand_built_shop(), ["brand", "color"])
    values = {(r["q_id"], r["doc_id"]): r["affinity"] for r in both.iter_rows(named=True)}
    assert values[("s2", "pa1")] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert values[("s2", "pa2")] == pytest.approx((2 / 3 + 0) / 2)


def test_rerank_moves_the_preferred_item_up_only_with_weight(headroom):
    run = pl.DataFrame({"q_id": ["s2", "s2"], "doc_id": ["pc1", "pa1"], "score": [2.0, 1.0]})
    affinity = pl.DataFrame({"q_id": ["s2", "s2"], "doc_id": ["pc1", "pa1"], "affinity": [0.0, 1.0]})
    unchanged = headroom.rerank(headroom.with_affinity(run, affinity), 0.0).sort("score", descending=True)
    assert unchanged["doc_id"].to_list() == ["pc1", "pa1"]
    moved = headroom.rerank(headroom.with_affinity(run, affinity), 2.0).sort("score", descending=True)
    assert moved["doc_id"].to_list() == ["pa1", "pc1"]


def test_unknown_attribute_is_a_one_line_error(headroom):
    with pytest.raises(SystemExit, match="unknown attribute"):
        headroom.parse_attributes("brand,colour")
