"""simshop's vocabulary: the category tree, brands, colours, styles and price tiers every stage draws from.

Not a stage of its own: the tables behind stage 1 (**Catalogue**: "a fixed category tree (top level > mid
category > leaf product type, e.g. ``Fashion > Shoes > Running Shoes``) with a shape, synonyms, materials,
substitutes and complements per type"; brands of each top category; colours; styles, i.e. the print pattern;
price tiers) and the words of stages 2 and 5 (listing filler words; colour, style and category synonyms).

The tables are data files in ``vocabularies/`` (JSON, one file per table, each with a ``description``),
loaded once at import with :mod:`importlib.resources`. Their order is part of the generator: the indices below
(``TYPE_MID``, ``BRAND_TOP``, the colour of index 3, ...) follow it, so reordering a file changes every dataset
and needs a ``GENERATOR_VERSION`` bump.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np


def _load(name: str) -> dict:
    """A vocabulary file of this package's ``vocabularies/`` folder (key order kept, as ``json`` keeps it)."""
    path = resources.files(__package__) / "vocabularies" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class MidCategory:
    name: str
    top: str
    terms: tuple[str, ...]  # how shoppers name the category in a broad query; the first is canonical
    adjectives: tuple[str, ...]  # selling words for titles and descriptions
    use: str
    base_price: float


@dataclass(frozen=True)
class ProductType:
    name: str
    mid: str
    shape: str
    synonyms: tuple[str, ...]
    materials: tuple[str, ...]
    substitutes: tuple[str, ...] = ()
    complements: tuple[str, ...] = ()


def _category_tree() -> tuple[tuple[MidCategory, ...], tuple[ProductType, ...]]:
    mids, types = [], []
    for top, mid_categories in _load("category_tree")["tree"].items():
        for mid_name, mid in mid_categories.items():
            mids.append(MidCategory(mid_name, top, tuple(mid["terms"]), tuple(mid["adjectives"]), mid["use"],
                                    float(mid["base_price"])))
            for type_name, product_type in mid["product_types"].items():
                types.append(ProductType(type_name, mid_name, product_type["shape"],
                                         *(tuple(product_type[key]) for key in
                                           ("synonyms", "materials", "substitutes", "complements"))))
    return tuple(mids), tuple(types)


MID_CATEGORIES, PRODUCT_TYPES = _category_tree()
TOP_CATEGORIES = tuple(dict.fromkeys(mid.top for mid in MID_CATEGORIES))
BRANDS_BY_TOP = {top: tuple(brands) for top, brands in _load("brands")["brands_by_top_category"].items()}
BRANDS = tuple(brand for top in TOP_CATEGORIES for brand in BRANDS_BY_TOP[top])
BRAND_TOP = np.array([TOP_CATEGORIES.index(top) for top in TOP_CATEGORIES for _ in BRANDS_BY_TOP[top]])

_COLORS = _load("colors")["colors"]
COLOR_RGB = {color: tuple(entry["rgb"]) for color, entry in _COLORS.items()}
COLORS = tuple(COLOR_RGB)
COLOR_POPULARITY = np.array([entry["popularity"] for entry in _COLORS.values()], dtype=float)
COLOR_SYNONYMS = {color: tuple(entry["synonyms"]) for color, entry in _COLORS.items() if entry["synonyms"]}
_STYLES = _load("styles")["styles"]
STYLES = tuple(_STYLES)
STYLE_POPULARITY = np.array([entry["popularity"] for entry in _STYLES.values()], dtype=float)
STYLE_SYNONYMS = {style: tuple(entry["synonyms"]) for style, entry in _STYLES.items() if entry["synonyms"]}
_PRICE_FACTOR = _load("price_tiers")["price_factor"]
PRICE_TIERS = tuple(_PRICE_FACTOR)
TIER_PRICE_FACTOR = np.array(list(_PRICE_FACTOR.values()), dtype=float)
MATERIALS = tuple(dict.fromkeys(m for t in PRODUCT_TYPES for m in t.materials))
FILLER_WORDS = tuple(_load("filler_words")["filler_words"])

MID_INDEX = {mid.name: i for i, mid in enumerate(MID_CATEGORIES)}
TYPE_INDEX = {t.name: i for i, t in enumerate(PRODUCT_TYPES)}
TYPE_MID = np.array([MID_INDEX[t.mid] for t in PRODUCT_TYPES])
MID_TOP = np.array([TOP_CATEGORIES.index(mid.top) for mid in MID_CATEGORIES])


def brands_of_top(top: int) -> np.ndarray:
    """Indices into :data:`BRANDS` of the brands of top category ``top``, biggest first."""
    return np.flatnonzero(np.equal(BRAND_TOP, top))
