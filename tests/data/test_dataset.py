"""The canonical dataset (data/dataset.py): what validation rejects (one message per problem), the save / load
round trip with optional tables and images, and the small summaries."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset


def tables() -> dict[str, pl.DataFrame]:
    products = pl.DataFrame({
        "product_id": ["p0", "p1", "p2"], "title": ["red shoe", "blue mug", "lamp"], "description": ["", "", ""],
        "bullets": ["", "", ""], "brand": ["acme", "nova", ""], "color": ["red", "blue", ""],
        "category": ["shoes", "kitchen > mugs", ""], "shop_id": [None, None, None]},
        schema_overrides={"shop_id": pl.Utf8})
    queries = pl.DataFrame({"query_id": ["q0", "q1"], "query": ["red shoe", "mug"], "split": ["train", "test"],
                            "group": [None, "x"]})
    judgments = pl.DataFrame({"query_id": ["q0", "q0", "q1"], "product_id": ["p0", "p1", "p1"],
                              "label": ["E", "I", "S"]})
    return {"products": products, "queries": queries, "judgments": judgments}


def behaviour() -> dict[str, pl.DataFrame]:
    searches = pl.DataFrame({"search_id": ["s0", "s1"], "query_id": ["q0", "q1"], "user_id": ["u0", "u1"],
                             "timestamp": [0.5, 1.5], "split": ["train", "test"]})
    interactions = pl.DataFrame({"user_id": ["u0", "u1"], "product_id": ["p0", "p1"], "timestamp": [0.5, 1.5],
                                 "action": ["click", "order"], "search_id": ["s0", None], "position": [0, None]},
                                schema_overrides={"position": pl.Int32})
    users = pl.DataFrame({"user_id": ["u0", "u1"], "age": [30, 41]})
    return {"searches": searches, "interactions": interactions, "users": users}


def make(**changes) -> ProductSearchDataset:
    return ProductSearchDataset("toy", **{**tables(), **changes})


def test_a_valid_dataset_and_its_summaries():
    data = make()
    assert data.describe() == "toy: 3 products, 2 queries, 3 judgments"
    assert not data.has_behaviour
    full = make(**behaviour())
    assert full.has_behaviour
    assert full.describe() == "toy: 3 products, 2 queries, 3 judgments, 2 searches, 2 interactions"


def test_an_all_null_column_may_have_any_type():
    # shop_id is all null: polars types it Null, which is accepted; a typed non-null column is not
    products = tables()["products"].with_columns(pl.lit(None).alias("shop_id"))
    assert make(products=products).products.schema["shop_id"] == pl.Null
    with pytest.raises(DatasetError, match=r"products.shop_id has type Int\d+, expected (String|Utf8)"):
        make(products=products.with_columns(pl.lit(1).alias("shop_id")))


@pytest.mark.parametrize("change, message", [
    (lambda t: {"products": t["products"].drop("brand")}, "table 'products' lacks column 'brand'"),
    (lambda t: {"products": t["products"].with_columns(pl.lit("p0").alias("product_id"))},
     "2 duplicate product_id values in 'products'"),
    (lambda t: {"queries": t["queries"].with_columns(pl.lit("q0").alias("query_id"))},
     "1 duplicate query_id values in 'queries'"),
    (lambda t: {"queries": t["queries"].with_columns(pl.lit("dev").alias("split"))},
     r"queries.split has values \['dev'\]"),
    (lambda t: {"judgments": t["judgments"].with_columns(pl.lit("X").alias("label"))},
     r"judgments.label has values \['X'\]"),
    (lambda t: {"products": t["products"].with_columns(pl.Series("title", ["a", "  ", None]))},
     "2 rows of 'products' have empty title"),
    (lambda t: {"queries": t["queries"].with_columns(pl.Series("query", ["", "mug"]))},
     "1 rows of 'queries' have empty query"),
    (lambda t: {"judgments": t["judgments"].with_columns(pl.Series("product_id", ["p0", "p9", "p8"]))},
     "2 judgments point at unknown product ids"),
])
def test_validation_names_the_problem(change, message):
    with pytest.raises(DatasetError, match=message):
        make(**change(tables()))


def test_validation_of_behaviour_tables_and_images():
    extra = behaviour()
    with pytest.raises(DatasetError, match="duplicate search_id"):
        make(**{**extra, "searches": extra["searches"].with_columns(pl.lit("s0").alias("search_id"))})
    with pytest.raises(DatasetError, match=r"interactions.action has values \['view'\]"):
        make(**{**extra, "interactions": extra["interactions"].with_columns(pl.lit("view").alias("action"))})
    with pytest.raises(DatasetError, match="timestamp has type"):
        make(**{**extra, "searches": extra["searches"].with_columns(pl.lit("day 1").alias("timestamp"))})
    with pytest.raises(DatasetError, match=r"images.npy has shape \(2, 4, 4, 3\), expected \[3, H, W, 3\]"):
        make(images=np.zeros((2, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(DatasetError, match="images.npy has shape"):
        make(images=np.zeros((3, 4, 4), dtype=np.uint8))


def test_save_and_load_round_trip(tmp_path):
    images = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    features = pl.DataFrame({"product_id": ["p0", "p1"], "features": [[0.5, 1.0], [2.0, 3.0]]},
                            schema_overrides={"features": pl.List(pl.Float32)})
    data = make(**behaviour(), images=images, image_features=features)
    data.meta = {"protocol": "toy", "fully_judged": True}
    folder = data.save(tmp_path / "toy")
    assert folder == tmp_path / "toy" and not (tmp_path / "toy.tmp").exists()
    loaded = ProductSearchDataset.load(folder)
    assert loaded.name == "toy" and loaded.meta == {"protocol": "toy", "fully_judged": True}
    for table in ("products", "queries", "judgments", "searches", "interactions", "users", "image_features"):
        assert getattr(loaded, table).equals(getattr(data, table)), table
    np.testing.assert_array_equal(loaded.images, images)


def test_save_replaces_an_older_version_and_absent_tables_stay_absent(tmp_path):
    make(**behaviour(), images=np.zeros((3, 1, 1, 3), dtype=np.uint8)).save(tmp_path / "toy")
    make().save(tmp_path / "toy")
    assert not (tmp_path / "toy" / "searches.parquet").exists()
    assert not (tmp_path / "toy" / "images.npy").exists()
    loaded = ProductSearchDataset.load(tmp_path / "toy")
    assert loaded.searches is None and loaded.images is None and loaded.users is None and not loaded.has_behaviour


def test_load_of_an_unprepared_folder_says_so(tmp_path):
    with pytest.raises(DatasetError, match="no meta.json"):
        ProductSearchDataset.load(tmp_path)
