"""The image-colour world (retrieval_zoo/data/worlds/image_colour.py): its rule holds in the tables, it is
deterministic from the seed, and ``colour_in_image=False`` takes the colour out of the pictures."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.data.simshop.vocabulary import COLOR_RGB
from retrieval_zoo.data.worlds import image_colour


@pytest.fixture(scope="module")
def world():
    return image_colour.build(seed=0)


def centre_colour_accuracy(world) -> float:
    """Share of products whose picture's centre (always inside the silhouette, simshop) is nearest in RGB to the
    prototype of the colour the judgments use."""
    centre = world.images[:, 12:20, 12:20].reshape(len(world.images), -1, 3).mean(1)
    names = list(image_colour.COLOURS[:world.meta["world"]["n_colours"]])
    palette = np.array([COLOR_RGB[name] for name in names], dtype=float)
    nearest = np.argmin(((centre[:, None] - palette[None]) ** 2).sum(-1), axis=1)
    return float((np.array(names)[nearest] == world.products["latent_colour"].to_numpy()).mean())


def test_titles_never_name_the_colour_but_the_picture_shows_it(world):
    words = set(" ".join(world.products["title"].to_list() + world.products["category"].to_list()).split())
    assert not words & set(image_colour.COLOURS)
    assert (world.products["color"] == "").all()
    assert world.images.shape == (world.products.height, 32, 32, 3) and world.images.dtype == np.uint8
    assert centre_colour_accuracy(world) > 0.95


def test_exact_means_type_and_attribute_match(world):
    queries = world.queries.with_columns(pl.col("query").str.splitn(" ", 2).struct.rename_fields(["value", "type"])
                                         ).unnest("query")
    pairs = world.judgments.join(queries, on="query_id").join(world.products, on="product_id")
    assert (pairs["label"] == "E").all() and (pairs["type"] == pairs["latent_type"]).all()
    colour = pairs.filter(pl.col("group") == "image_attr")
    assert (colour["value"] == colour["latent_colour"]).all()
    material = pairs.filter(pl.col("group") == "text_attr")
    assert (material["value"] == material["latent_material"]).all()
    # every matching product is judged (fully judged), and a colour query's Exact set fits in the top 10
    n_exact = world.judgments.join(queries, on="query_id").group_by("query_id", "group").len()
    assert n_exact.filter(pl.col("group") == "image_attr")["len"].unique().to_list() == [8]
    assert n_exact.filter(pl.col("group") == "text_attr")["len"].unique().to_list() == [16]
    assert world.meta["fully_judged"] is True


def test_every_colour_and_type_is_trained_and_test_pairs_are_new(world):
    queries = world.queries.with_columns(pl.col("query").str.splitn(" ", 2).struct.rename_fields(["value", "type"])
                                         ).unnest("query")
    for group in ("image_attr", "text_attr"):
        rows = queries.filter(pl.col("group") == group)
        train, test = rows.filter(pl.col("split") == "train"), rows.filter(pl.col("split") == "test")
        assert set(test["value"]) <= set(train["value"]) and set(test["type"]) <= set(train["type"])
        assert set(rows["split"]) == {"train", "valid", "test"}
    assert world.queries.filter((pl.col("group") == "image_attr") & (pl.col("split") == "test")).height == 16


def test_chance_level_of_a_colour_blind_ranking():
    mean, sd = image_colour.chance_colour_recall(n_type=64, n_exact=8, k=10, n_queries=16)
    assert mean == pytest.approx(10 / 64) and 0.02 < sd < 0.04
    # the closed form matches random rankings within the type
    rng = np.random.default_rng(0)
    hits = [(rng.permutation(64)[:10] < 8).sum() / 8 for _ in range(20000)]
    assert np.mean(hits) == pytest.approx(mean, abs=0.005)
    assert np.std(hits) / 4 == pytest.approx(sd, rel=0.05)


def test_deterministic_from_the_seed(world):
    again = image_colour.build(seed=0)
    assert again.products.equals(world.products) and again.queries.equals(world.queries)
    assert again.judgments.equals(world.judgments) and np.array_equal(again.images, world.images)
    other = image_colour.build(seed=1)
    assert not np.array_equal(other.images, world.images)


def test_knob_takes_the_colour_out_of_the_pictures(world):
    blind = image_colour.build(seed=0, colour_in_image=False)
    assert blind.products.equals(world.products) and blind.judgments.equals(world.judgments)
    assert centre_colour_accuracy(blind) < 2 / world.meta["world"]["n_colours"]  # chance: 1 / 8
