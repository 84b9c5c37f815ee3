"""The stage-order world (retrieval_zoo/data/worlds/stage_order.py): its rule holds in the logs, it is
deterministic from the seed, and ``ordered_levels=False`` removes the rule."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.data.stages import mine_from_logs
from retrieval_zoo.data.worlds import stage_order


@pytest.fixture(scope="module")
def world():
    return stage_order.build(seed=0)


def mined_levels(data) -> pl.DataFrame:
    """Every (search, item, level) as the data module mines it, with the query text and the item's category."""
    searches = data.searches.join(data.queries.select("query_id", "query"), on="query_id", maintain_order="left")
    product_ids = data.products["product_id"].to_list()
    lists = mine_from_logs(data.interactions, searches["search_id"].to_list(), product_ids)
    units = np.repeat(np.arange(searches.height), np.diff(lists.offsets))
    titles = data.products["title"].gather(lists.items)
    return pl.DataFrame({"query": searches["query"].gather(units), "search_id": searches["search_id"].gather(units),
                         "category": titles.str.split(" ").list.first(), "level": lists.levels})


def test_the_level_is_the_tier_of_the_item_category_for_the_query(world):
    levels = mined_levels(world)
    expected = {(query, category): 3 - tier for query, tiers in world.meta["tiers"].items()
                for tier, category in enumerate(tiers)}
    observed = levels.group_by("query", "category").agg(pl.col("level").unique())
    assert observed.height == len(expected)  # only tier categories are ever shown
    for query, category, seen in observed.iter_rows():
        assert seen == [expected[(query, category)]]
    # every search shows 2 items per level, and every query's tiers are its own
    assert (levels.group_by("search_id", "level").len()["len"] == 2).all()
    tier_categories = [c for tiers in world.meta["tiers"].values() for c in tiers]
    assert len(tier_categories) == len(set(tier_categories))


def test_queries_share_no_word_with_titles_or_each_other(world):
    title_words = set(" ".join(world.products["title"]).split())
    query_words = [word for query in world.queries["query"] for word in query.split()]
    assert len(query_words) == len(set(query_words)) and not set(query_words) & title_words


def test_the_evaluation_lists_and_reference_taus(world):
    lists = stage_order.stage_lists(world)
    per_list = lists.group_by("search_id").agg(pl.col("level").sort())
    assert per_list.height == world.searches.filter(pl.col("split") == "test").height
    assert all(levels == [0, 0, 1, 1, 2, 2, 3, 3] for levels in per_list["level"].to_list())
    # level-0 items come from categories outside the query's tiers (the rule's level 0)
    tiers = world.meta["tiers"]
    randoms = (lists.filter(pl.col("level") == 0).join(world.searches.select("search_id", "query_id"), on="search_id")
               .join(world.queries.select("query_id", "query"), on="query_id")
               .join(world.products.select("product_id", "title"), on="product_id"))
    assert not any(title.split()[0] in tiers[query] for query, title in randoms.select("query", "title").iter_rows())
    levels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert stage_order.perfect_tau(levels) == pytest.approx(0.9258, abs=1e-4)
    assert stage_order.engaged_split_tau(levels) == pytest.approx(0.6172, abs=1e-4)


def test_the_same_seed_gives_the_same_world_and_another_seed_another():
    first, again, other = stage_order.build(seed=3), stage_order.build(seed=3), stage_order.build(seed=4)
    for table in ("products", "queries", "judgments", "searches", "interactions"):
        assert getattr(first, table).equals(getattr(again, table))
    assert first.meta["tiers"] != other.meta["tiers"]


def test_the_knob_removes_the_rule():
    shuffled = stage_order.build(seed=0, ordered_levels=False)
    levels = mined_levels(shuffled)
    spread = levels.group_by("query", "category").agg(pl.col("level").n_unique().alias("levels"))
    assert (spread["levels"] == 3).all()  # every shown category takes every level across searches
    # and the level is independent of the tier: each tier's items are ordered about a third of the time
    tier_of = {(q, c): t for q, tiers in shuffled.meta["tiers"].items() for t, c in enumerate(tiers)}
    ordered_share = (levels.with_columns(pl.struct("query", "category").map_elements(
        lambda row: tier_of[(row["query"], row["category"])], return_dtype=pl.Int64).alias("tier"))
        .group_by("tier").agg((pl.col("level") == 3).mean()))
    assert ordered_share["level"].is_between(0.25, 0.42).all()
