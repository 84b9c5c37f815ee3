"""simshop's vocabulary data files: they load from the package, and their cross-references are consistent."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from retrieval_zoo.data import simshop
from retrieval_zoo.data.simshop import vocabulary as vocab
from retrieval_zoo.data.simshop.images import SHAPES

FILES = ("category_tree", "brands", "colors", "styles", "price_tiers", "filler_words")


@pytest.mark.parametrize("name", FILES)
def test_every_vocabulary_file_is_package_data_with_a_description(name):
    path = resources.files("retrieval_zoo.data.simshop") / "vocabularies" / f"{name}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data.pop("description"), str) and len(data) == 1


def test_category_tree_references_are_consistent():
    names = {t.name for t in vocab.PRODUCT_TYPES}
    assert len(names) == len(vocab.PRODUCT_TYPES)  # no type is listed twice
    for product_type in vocab.PRODUCT_TYPES:
        assert set(product_type.substitutes) | set(product_type.complements) <= names, product_type.name
        assert product_type.name not in product_type.substitutes + product_type.complements
        assert product_type.shape in SHAPES and product_type.synonyms and product_type.materials
    for mid in vocab.MID_CATEGORIES:
        assert mid.terms and mid.adjectives and mid.base_price > 0
    # Types are grouped by mid category and mid categories by top category, in file order.
    assert list(vocab.TYPE_MID) == sorted(vocab.TYPE_MID)
    assert list(vocab.MID_TOP) == sorted(vocab.MID_TOP)


def test_attribute_tables_line_up():
    assert set(vocab.BRANDS_BY_TOP) == set(vocab.TOP_CATEGORIES)
    assert len(set(vocab.BRANDS)) == len(vocab.BRANDS) == len(vocab.BRAND_TOP)
    assert len(vocab.COLORS) == len(vocab.COLOR_POPULARITY) and (vocab.COLOR_POPULARITY > 0).all()
    assert all(len(rgb) == 3 and all(0 <= c <= 255 for c in rgb) for rgb in vocab.COLOR_RGB.values())
    assert len(vocab.STYLES) == len(vocab.STYLE_POPULARITY) and "plain" in vocab.STYLES  # listings.py names it
    assert set(vocab.COLOR_SYNONYMS) <= set(vocab.COLORS) and set(vocab.STYLE_SYNONYMS) <= set(vocab.STYLES)
    assert len(vocab.PRICE_TIERS) == len(vocab.TIER_PRICE_FACTOR)
    assert list(vocab.TIER_PRICE_FACTOR) == sorted(vocab.TIER_PRICE_FACTOR)  # cheapest first
    assert len(set(vocab.FILLER_WORDS)) == len(vocab.FILLER_WORDS) >= 3  # titles sample up to three


def test_package_exports_the_public_api():
    assert sorted(simshop.__all__) == sorted([
        "COLOR_RGB", "COLOR_SYNONYMS", "PRESETS", "STYLE_SYNONYMS", "SimShopConfig", "generate_simshop",
        "load_simshop", "resolve_config"])
    assert all(hasattr(simshop, name) for name in simshop.__all__)
