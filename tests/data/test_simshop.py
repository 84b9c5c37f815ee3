"""simshop: determinism, the mechanisms each paper needs (taste, image-only attributes), labels, schema, cache."""

from __future__ import annotations

import functools
import re
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from retrieval_zoo.data import simshop
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset, validate
from retrieval_zoo.data.registry import parse_dataset_spec
from retrieval_zoo.data.simshop import (
    COLOR_RGB,
    COLOR_SYNONYMS,
    PRESETS,
    STYLE_SYNONYMS,
    generate_simshop,
    load_simshop,
    resolve_config,
)

TINY = PRESETS["tiny"]
# Behaviour statistics need more searches (and a larger catalogue) than the tiny preset offers; ~1 s each.
STATS = replace(TINY, n_products=1500, n_users=100, n_days=20, test_days=5, searches_per_day=300)
TABLES = ("products", "queries", "judgments", "searches", "interactions", "users")


@pytest.fixture(scope="module")
def tiny() -> ProductSearchDataset:
    return generate_simshop(TINY)


@pytest.fixture(scope="module")
def stats() -> ProductSearchDataset:
    return generate_simshop(STATS)


def assert_same_data(a: ProductSearchDataset, b: ProductSearchDataset) -> None:
    for table in TABLES:
        assert getattr(a, table).equals(getattr(b, table)), f"table {table} differs"
    np.testing.assert_array_equal(a.images, b.images)


# ---------------------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_frames_and_images(tiny, tmp_path):
    again = generate_simshop(TINY)
    assert_same_data(tiny, again)
    # Also byte-identical files on disk (what the cache stores).
    tiny.save(tmp_path / "a")
    again.save(tmp_path / "b")
    for file in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file


def test_different_seed_gives_different_shop(tiny):
    other = generate_simshop(replace(TINY, seed=1))
    assert not other.products.equals(tiny.products)
    assert not other.interactions.equals(tiny.interactions)
    assert not np.array_equal(other.images, tiny.images)


# ---------------------------------------------------------------------------------------------------------
# Taste: the user's history predicts which relevant item they order, unless preference_strength = 0
# ---------------------------------------------------------------------------------------------------------
TASTE_ATTRIBUTES = ("latent_color", "latent_style", "brand")


def taste_signal(ds: ProductSearchDataset) -> tuple[int, float, float]:
    """For orders in held-out broad searches: how many of (colour, style, brand) match the user's most frequent
    value in their train-period clicks/collects/orders, against the same count averaged over the search's
    exposed E items (what the user would get choosing blind to taste). Returns (n, ordered, chance)."""
    searches = ds.searches.select("search_id", "query_id", "split", "specificity")
    events = ds.interactions.join(searches, on="search_id").join(
        ds.products.select("product_id", *TASTE_ATTRIBUTES), on="product_id")
    history = events.filter((pl.col("split") == "train") & (pl.col("action") != "exposure"))
    held_out = events.filter((pl.col("split") != "train") & (pl.col("specificity") == "broad"))
    matches = pl.lit(0)
    for attribute in TASTE_ATTRIBUTES:
        favourite = (history.group_by("user_id", attribute).len()
                     .sort(["user_id", "len", attribute], descending=[False, True, False])
                     .group_by("user_id", maintain_order=True).first()
                     .select("user_id", pl.col(attribute).alias(f"favourite_{attribute}")))
        held_out = held_out.join(favourite, on="user_id", how="left")
        matches = matches + (pl.col(attribute) == pl.col(f"favourite_{attribute}")).fill_null(False).cast(pl.Int32)
    held_out = held_out.with_columns(matches.alias("matches"))
    exact = ds.judgments.filter(pl.col("label") == "E").select("query_id", "product_id")
    chance = (held_out.filter(pl.col("action") == "exposure").join(exact, on=["query_id", "product_id"])
              .group_by("search_id").agg(pl.col("matches").mean().alias("chance")))
    ordered = held_out.filter(pl.col("action") == "order").join(chance, on="search_id")
    return ordered.height, ordered["matches"].mean(), ordered["chance"].mean()


def test_history_predicts_the_ordered_item_by_default(stats):
    n, ordered, chance = taste_signal(stats)
    assert n > 150
    assert ordered - chance > 0.12, (ordered, chance)


def test_history_predicts_nothing_without_preference():
    n, ordered, chance = taste_signal(generate_simshop(replace(STATS, preference_strength=0.0)))
    assert n > 150
    assert abs(ordered - chance) < 0.08, (ordered, chance)


# ---------------------------------------------------------------------------------------------------------
# Image-only attributes: in the pixels, nowhere in the text
# ---------------------------------------------------------------------------------------------------------
def central_color(images: np.ndarray) -> np.ndarray:
    """Nearest colour prototype to the mean RGB of the central 8 x 8 pixels."""
    c = images.shape[1] // 2
    centre = images[:, c - 4: c + 4, c - 4: c + 4].reshape(len(images), -1, 3).astype(float).mean(axis=1)
    prototypes = np.array(list(COLOR_RGB.values()), dtype=float)
    nearest = ((centre[:, None, :] - prototypes[None]) ** 2).sum(-1).argmin(axis=1)
    return np.array(list(COLOR_RGB))[nearest]


def test_colour_is_recoverable_from_pixels(tiny):
    assert tiny.images.shape == (tiny.products.height, 32, 32, 3) and tiny.images.dtype == np.uint8
    image_only = tiny.products["image_only"].to_numpy()
    recovered = central_color(tiny.images) == tiny.products["latent_color"].to_numpy()
    assert recovered[image_only].mean() > 0.9
    assert recovered.mean() > 0.9


def test_style_shows_as_texture(tiny):
    c = tiny.images.shape[1] // 2
    texture = tiny.images[:, c - 6: c + 6, c - 6: c + 6].astype(float).std(axis=(1, 2)).mean(axis=1)
    plain = (tiny.products["latent_style"] == "plain").to_numpy()
    assert texture[~plain].mean() > 2 * texture[plain].mean()


def words_of(value: str) -> str:
    return r"\b" + re.escape(value) + r"\b"


def test_image_only_attributes_are_absent_from_all_text(tiny):
    products = tiny.products
    image_only = products.filter(pl.col("image_only"))
    assert 0.35 < image_only.height / products.height < 0.65
    assert (image_only["color"] == "").all() and (image_only["style"] == "").all()
    for row in image_only.iter_rows(named=True):
        text = " ".join([row["title"], row["description"], row["bullets"]]).lower()
        names = (row["latent_color"], *COLOR_SYNONYMS.get(row["latent_color"], ()),
                 row["latent_style"], *STYLE_SYNONYMS.get(row["latent_style"], ()))
        for name in names:
            assert not re.search(words_of(name), text), (name, row["product_id"], text)
    # The others do say it, in the colour column and in the title.
    text_products = products.filter(~pl.col("image_only"))
    assert (text_products["color"] == text_products["latent_color"]).all()
    assert all(re.search(words_of(color), title.lower())
               for title, color in zip(text_products["title"], text_products["color"], strict=True))


def test_alltext_override_writes_every_colour():
    shop = generate_simshop(replace(TINY, image_only_share=0.0))
    assert not shop.products["image_only"].any()
    assert (shop.products["color"] == shop.products["latent_color"]).all()


# ---------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------
def test_exposed_items_are_mostly_exact_or_substitute(stats):
    exposed = stats.interactions.filter(pl.col("action") == "exposure").join(
        stats.searches.select("search_id", "query_id"), on="search_id")
    labels = exposed.join(stats.judgments, on=["query_id", "product_id"], how="left")["label"].fill_null("I")
    share = labels.value_counts(normalize=True).to_dict(as_series=False)
    share = dict(zip(share["label"], share["proportion"], strict=True))
    assert share["E"] + share["S"] > 0.6, share
    assert share["E"] > share["C"] and share["E"] > share["I"], share


def test_catalogue_is_mostly_irrelevant_and_fully_judged(stats):
    assert stats.meta["fully_judged"] is True
    assert set(stats.judgments["label"].unique()) == {"E", "S", "C"}  # I is implied by absence
    judged_share = stats.judgments.height / (stats.queries.height * stats.products.height)
    assert judged_share < 0.2
    # Every query has at least one exact match (specific intents are drawn from real products).
    assert stats.judgments.filter(pl.col("label") == "E")["query_id"].n_unique() == stats.queries.height


def test_labels_follow_the_intent(stats):
    products = stats.products.select("product_id", "product_type", "brand", "material",
                                     pl.col("latent_color").alias("color"), pl.col("latent_style").alias("style"))
    specific = stats.queries.filter(pl.col("specificity") == "specific").head(40)
    assert specific.height == 40
    for query_id, intent in zip(specific["query_id"], specific["intent"], strict=True):
        wanted = dict(part.split("=") for part in intent.split(";"))
        wanted["product_type"] = wanted.pop("type")
        matches = pl.all_horizontal([pl.col(k) == v for k, v in wanted.items()])
        judged = stats.judgments.filter(pl.col("query_id") == query_id).join(products, on="product_id")
        assert judged.filter(pl.col("label") == "E").select(matches.all()).item(), intent
        same_type = judged.filter(pl.col("product_type") == wanted["product_type"])
        assert (same_type.filter(~matches)["label"] == "S").all(), intent
        catalogue_exact = products.filter(matches).height
        assert catalogue_exact == judged.filter(pl.col("label") == "E").height, intent


def test_query_groups_and_splits(tiny):
    queries = tiny.queries
    assert queries["query"].n_unique() == queries.height
    broad = queries["specificity"] == "broad"
    assert ((queries["group"] == "broad") == broad).all()
    names_image_attribute = queries["intent"].str.contains("color=|style=")
    assert ((queries["group"] == "image_attr") == names_image_attribute).all()
    # A query's split is the latest split of the searches that used it.
    latest = (tiny.searches.with_columns(pl.col("split").replace_strict({"train": 0, "valid": 1, "test": 2})
                                         .alias("rank"))
              .group_by("query_id").agg(pl.col("rank").max()))
    joined = queries.join(latest, on="query_id")
    assert joined.height == queries.height
    assert (joined["split"] == joined["rank"].replace_strict({0: "train", 1: "valid", 2: "test"})).all()


# ---------------------------------------------------------------------------------------------------------
# Behaviour and splits
# ---------------------------------------------------------------------------------------------------------
def test_searches_split_by_time(tiny):
    days = {split: tiny.searches.filter(pl.col("split") == split)["timestamp"] for split in ("train", "valid", "test")}
    assert days["train"].max() < days["valid"].min() < days["valid"].max() < days["test"].min()
    assert tiny.searches.height == TINY.n_searches


def test_exposures_clicks_orders_are_consistent(tiny):
    events = tiny.interactions
    exposures = events.filter(pl.col("action") == "exposure")
    assert exposures.height == tiny.searches.height * TINY.exposure_size
    assert sorted(exposures["position"].unique().to_list()) == list(range(TINY.exposure_size))
    clicks = events.filter(pl.col("action") == "click").select("search_id", "product_id")
    for action in ("order", "collect"):
        followed = events.filter(pl.col("action") == action).select("search_id", "product_id")
        assert followed.height > 0
        assert followed.join(clicks, on=["search_id", "product_id"], how="anti").height == 0
    orders_per_search = events.filter(pl.col("action") == "order").group_by("search_id").len()["len"]
    assert orders_per_search.max() == 1
    # Every event happens on its search's day, after the search.
    timed = events.join(tiny.searches.select("search_id", pl.col("timestamp").alias("searched")), on="search_id")
    assert (timed["timestamp"] >= timed["searched"]).all()
    assert (timed["timestamp"].floor() == timed["searched"].floor()).all()


def test_users_carry_latent_taste(tiny):
    users = tiny.users
    assert users.height == TINY.n_users
    assert set(users["user_type"].unique()) == {"visual", "textual"}
    assert ((users["user_type"] == "visual") == (users["visual_reliance"] >= 0.5)).all()
    assert users["visual_reliance"].is_between(0, 1).all()


# ---------------------------------------------------------------------------------------------------------
# Schema, persistence, cache, overrides
# ---------------------------------------------------------------------------------------------------------
def test_schema_and_meta(tiny):
    validate(tiny)
    assert tiny.has_behaviour and tiny.images is not None and tiny.products["shop_id"].null_count() == 0
    assert tiny.meta["label_source"] == "behaviour" and tiny.meta["image_size"] == 32
    assert tiny.meta["config"]["seed"] == TINY.seed and tiny.meta["protocol"]


def test_save_load_round_trip(tiny, tmp_path):
    loaded = ProductSearchDataset.load(tiny.save(tmp_path / "shop"))
    assert_same_data(tiny, loaded)
    assert loaded.meta == tiny.meta and loaded.name == tiny.name


def test_cache_hit_does_not_regenerate(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path))
    first = load_simshop("tiny")
    assert len(list((tmp_path / "simshop").iterdir())) == 1

    def fail(*args, **kwargs):
        raise AssertionError("generate_simshop called on a cache hit")

    monkeypatch.setattr(simshop, "generate_simshop", fail)
    second = load_simshop("tiny")
    assert_same_data(first, second)
    assert second.name == "simshop-tiny"
    with pytest.raises(AssertionError, match="cache hit"):
        load_simshop("tiny", seed=5)  # a different config is a cache miss


def test_overrides_are_coerced_from_strings(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path))
    assert resolve_config("tiny", preference_strength="0", n_products="400") == replace(
        TINY, preference_strength=0.0, n_products=400)
    # As the registry will call it: functools.partial(load_simshop, "tiny") with the spec's string parameters.
    name, params = parse_dataset_spec("simshop-tiny:preference_strength=0,seed=3")
    shop = functools.partial(load_simshop, "tiny")(**params)
    assert shop.meta["config"]["preference_strength"] == 0.0 and shop.meta["config"]["seed"] == 3
    assert shop.name == "simshop-tiny:preference_strength=0,seed=3"


def test_unknown_override_names_the_valid_keys():
    with pytest.raises(DatasetError, match="valid keys:.*image_only_share.*preference_strength"):
        resolve_config("tiny", preferense_strength="0")
    with pytest.raises(DatasetError, match="valid presets: tiny, default, nopref, alltext"):
        resolve_config("huge")
    with pytest.raises(DatasetError, match="n_products"):
        resolve_config("tiny", n_products="many")
    with pytest.raises(DatasetError, match="image_only_share"):
        resolve_config("tiny", image_only_share="1.5")


def test_presets_differ_only_where_named():
    default = PRESETS["default"]
    assert PRESETS["nopref"] == replace(default, preference_strength=0.0)
    assert PRESETS["alltext"] == replace(default, image_only_share=0.0)
    assert TINY.n_products == 300 and TINY.n_users == 60 and TINY.n_searches == 1500
