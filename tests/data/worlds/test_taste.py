"""The taste world (retrieval_zoo/data/worlds/taste.py): its rule holds in the tables, it is deterministic,
and ``informative=False`` removes the signal."""

from __future__ import annotations

import polars as pl
import pytest

from retrieval_zoo.data.worlds import taste


@pytest.fixture(scope="module")
def world():
    return taste.build(seed=0)


def orders_with_brand(world) -> pl.DataFrame:
    brands = world.products.select("product_id", "brand")
    return (world.interactions.filter(pl.col("action") == "order").join(brands, on="product_id")
            .join(world.users, on="user_id").join(world.searches.select("search_id", "split"), on="search_id"))


def test_every_order_is_of_the_users_taste_and_test_searches_come_last(world):
    orders = orders_with_brand(world)
    assert orders.height == world.searches.height  # one order per search
    assert (orders["brand"] == orders["taste"]).all()
    last = world.searches.sort("timestamp").group_by("user_id").agg(pl.col("split").last(), pl.len())
    assert (last["split"] == "test").all()
    assert (world.searches["split"] == "test").sum() == world.users.height


def test_the_query_is_broad_and_the_history_mixes_taste_and_off_topic_clicks(world):
    assert world.queries.height == 1
    gadgets = world.products.filter(pl.col("category") == taste.GADGETS)["product_id"]
    assert set(world.judgments["product_id"]) == set(gadgets) and (world.judgments["label"] == "E").all()
    browsing = world.interactions.filter(pl.col("search_id").is_null())
    assert browsing.height and (browsing["action"] == "click").all()
    assert set(browsing["product_id"]).isdisjoint(gadgets)  # the noise is never ordered, never relevant


def test_chance_level():
    assert taste.chance_p_recall(10, 200) == pytest.approx(0.05)
    assert taste.chance_p_recall(10, 5) == 1.0


def test_deterministic_from_the_seed(world):
    again = taste.build(seed=0)
    for table in ("products", "searches", "interactions", "users", "judgments"):
        assert getattr(world, table).equals(getattr(again, table)), table
    assert not taste.build(seed=1).interactions.equals(world.interactions)


def test_the_knob_removes_the_signal():
    orders = orders_with_brand(taste.build(seed=0, informative=False))
    # fresh brand per search: about 1 / n_brands of the orders match the user's taste by accident
    share = (orders["brand"] == orders["taste"]).mean()
    assert share < 0.1
