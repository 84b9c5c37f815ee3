"""The composed item text: field order, word budgets, skipped repeats, category leaves, and one-line errors."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.features import (
    DEFAULT_ITEM_TEXT,
    FeatureSettings,
    build_catalog,
    columns_in_text,
    compose_item_texts,
    without_unread_text,
)


def products(**columns: list[str]) -> pl.DataFrame:
    n = len(columns["title"])
    base = {"product_id": [f"p{i}" for i in range(n)], "description": [""] * n, "bullets": [""] * n,
            "brand": [""] * n, "color": [""] * n, "category": [""] * n, "shop_id": [None] * n}
    return pl.DataFrame({**base, **columns}, schema_overrides={"shop_id": pl.Utf8})


def test_fields_in_order_cut_to_their_budgets():
    frame = products(title=["Acme red trail running shoe"], brand=["Zenit"],
                     category=["Sports > Footwear > Running Shoes"],
                     description=["Light and grippy, made for muddy paths and long runs"],
                     bullets=["- MATERIAL: mesh\n- COLOUR: red"])
    budgets = {"title": 3, "brand": 4, "category": 6, "description": 4, "bullets": 3}
    # bullets: the lone "-" marks are dropped before the budget is counted
    assert compose_item_texts(frame, budgets) == [
        "Acme red trail Zenit Sports Footwear Running Shoes Light and grippy, made MATERIAL: mesh COLOUR:"
    ]


def test_default_budgets_skip_what_the_title_already_says():
    frame = products(title=["HP Pavilion dv7 Notebook", "StarTech DB9 Adapter", "Nova mug"],
                     brand=["hp", "StarTech", "Orbit"],
                     category=["Computers > Notebook", "", "Home > Kitchen > Mugs & Cups"],
                     description=["", "StarTech DB9 Adapter", "Holds 300 ml."],
                     bullets=["- long list", "", ""])
    assert compose_item_texts(frame, DEFAULT_ITEM_TEXT) == [
        "HP Pavilion dv7 Notebook Computers Notebook",     # brand (any case) is in the title
        "StarTech DB9 Adapter",                            # a description that repeats the title
        "Nova mug Orbit Home Kitchen Mugs & Cups Holds 300 ml.",  # bullets: budget 0
    ]


def test_whole_words_only_and_empty_text_falls_back_to_the_title():
    frame = products(title=["HPC cluster node", "Plain title"], brand=["HP", ""])
    assert compose_item_texts(frame, {"title": 8, "brand": 2}) == ["HPC cluster node HP", "Plain title"]
    assert compose_item_texts(frame, {"title": 0, "brand": 2}) == ["HP", "Plain title"]


def test_budgets_follow_the_settings_order():
    frame = products(title=["blue lamp"], brand=["Lumo"])
    assert compose_item_texts(frame, {"brand": 1, "title": 8}) == ["Lumo blue lamp"]


@pytest.mark.parametrize("budgets, message", [
    ({"title": 32, "price": 4}, r"unknown columns \['price'\]; valid columns: title, brand"),
    ({"title": -1}, "whole numbers >= 0"),
    ({"title": 0, "brand": 0}, "uses no column"),
    ({}, "must map product columns"),
])
def test_bad_settings_are_one_line_errors(budgets, message):
    with pytest.raises(DatasetError, match=message):
        FeatureSettings(item_text=budgets)


def test_catalog_features_read_the_composed_text_and_keep_titles_for_display():
    frame = products(title=["red lamp", "blue mug"], brand=["Lumo", "Nova"], description=["", "holds tea"])
    dataset = ProductSearchDataset("tiny", frame, pl.DataFrame({"query_id": ["q"], "query": ["lamp"],
                                                                "split": ["test"], "group": [None]},
                                                               schema_overrides={"group": pl.Utf8}),
                                   pl.DataFrame({"query_id": ["q"], "product_id": ["p0"], "label": ["E"]}))
    settings = FeatureSettings()
    assert settings.item_max_tokens == 64
    catalog = build_catalog(dataset, {"item_text", "item_hashed"}, settings)
    assert catalog.titles == ["red lamp", "blue mug"]
    assert catalog.texts == ["red lamp Lumo", "blue mug Nova holds tea"]
    title_only = build_catalog(dataset, {"item_text"}, FeatureSettings(item_text={"title": 32}))
    assert title_only.texts == catalog.titles
    longer = (catalog.tensors["item_tokens"] > 0).sum(1) > (title_only.tensors["item_tokens"] > 0).sum(1)
    assert longer.all()


def test_a_long_category_path_keeps_its_most_specific_words():
    frame = products(title=["Charger"], category=["Electronics > Phone Accessories > Wall Chargers"])
    assert compose_item_texts(frame, {"title": 4, "category": 3}) == ["Charger Accessories Wall Chargers"]


def test_long_text_no_setting_reads_is_released_and_the_rest_kept(label_dataset):
    frame = label_dataset.products.with_columns(pl.lit("soft cotton, machine washable").alias("description"),
                                                pl.lit("- SIZE: M - WEIGHT: 200 g").alias("bullets"))
    full = replace(label_dataset, products=frame)
    released, names = without_unread_text(full, columns_in_text(DEFAULT_ITEM_TEXT))
    assert names == ["bullets"]
    assert released.products["bullets"].null_count() == released.products.height
    assert released.products["description"].equals(frame["description"])
    assert full.products["bullets"].null_count() == 0  # the dataset passed in is left as it was
    assert compose_item_texts(released.products, DEFAULT_ITEM_TEXT) == compose_item_texts(frame, DEFAULT_ITEM_TEXT)
    same, nothing = without_unread_text(full, {"title", "description", "bullets"})
    assert same is full and nothing == []
    # a column already empty is not "released" again
    assert without_unread_text(released, {"title"})[1] == ["description"]
