"""simshop stage 1, **Catalogue**: which products the shop sells.

From the design notes: a fixed category tree (top level > mid category > leaf product type, e.g.
``Fashion > Shoes > Running Shoes``) with a shape, synonyms, materials, substitutes and complements per type
(the tables are in :mod:`.vocabulary`). Each product draws a type, a brand of its top category (Zipf
popularity, a usual price tier per brand), a colour, a style (the print pattern: plain, striped, ...), a
material, a price tier, a price and a shop. It also draws whether the product is ``image_only`` (a share
``image_only_share``): stage 2 then writes its colour and style nowhere in the text.

Output: a dict of integer/float/bool arrays, one row per product, indices into the vocabulary tables.
"""

from __future__ import annotations

import numpy as np

from retrieval_zoo.data.simshop.config import SimShopConfig, stage_rng
from retrieval_zoo.data.simshop.vocabulary import (
    BRANDS,
    COLOR_POPULARITY,
    COLORS,
    MATERIALS,
    MID_CATEGORIES,
    MID_TOP,
    PRICE_TIERS,
    PRODUCT_TYPES,
    STYLE_POPULARITY,
    STYLES,
    TIER_PRICE_FACTOR,
    TOP_CATEGORIES,
    TYPE_MID,
    brands_of_top,
)


def zipf_weights(n: int, exponent: float = 0.8) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def sample_catalogue(config: SimShopConfig) -> dict[str, np.ndarray]:
    rng = stage_rng(config, "catalogue")
    n = config.n_products
    # Assortment depth varies a little per type; every type is stocked at least once.
    type_weights = rng.dirichlet(np.full(len(PRODUCT_TYPES), 8.0))
    type_idx = rng.choice(len(PRODUCT_TYPES), size=n, p=type_weights)
    type_idx[: len(PRODUCT_TYPES)] = np.arange(len(PRODUCT_TYPES))
    type_idx = rng.permutation(type_idx)

    brand = _sample_brands(rng, type_idx)
    brand_tier = np.arange(len(BRANDS)) % len(PRICE_TIERS)  # each brand has a usual price tier
    tier = np.where(rng.random(n) < 0.75, brand_tier[brand], rng.integers(len(PRICE_TIERS), size=n))
    base_price = np.array([MID_CATEGORIES[m].base_price for m in TYPE_MID])[type_idx]
    price = np.round(base_price * TIER_PRICE_FACTOR[tier] * rng.lognormal(0.0, 0.25, n)) - 0.01
    return {
        "type": type_idx,
        "brand": brand,
        "color": rng.choice(len(COLORS), size=n, p=COLOR_POPULARITY / COLOR_POPULARITY.sum()),
        "style": rng.choice(len(STYLES), size=n, p=STYLE_POPULARITY / STYLE_POPULARITY.sum()),
        "material": _sample_materials(rng, type_idx),
        "tier": tier,
        "price": np.maximum(price, 0.99),
        "shop": _sample_shops(rng, type_idx),
        "image_only": rng.random(n) < config.image_only_share,
    }


def _sample_brands(rng: np.random.Generator, type_idx: np.ndarray) -> np.ndarray:
    """Brands of the product's top category, with Zipf popularity (a few big brands, a long tail)."""
    top = MID_TOP[TYPE_MID[type_idx]]
    brand = np.empty(len(type_idx), dtype=np.int64)
    for t in range(len(TOP_CATEGORIES)):
        rows = np.flatnonzero(top == t)
        candidates = brands_of_top(t)
        brand[rows] = rng.choice(candidates, size=len(rows), p=zipf_weights(len(candidates)))
    return brand



def _sample_materials(rng: np.random.Generator, type_idx: np.ndarray) -> np.ndarray:
    material = np.empty(len(type_idx), dtype=np.int64)
    for t, product_type in enumerate(PRODUCT_TYPES):
        rows = np.flatnonzero(type_idx == t)
        options = np.array([MATERIALS.index(m) for m in product_type.materials])
        material[rows] = options[rng.integers(len(options), size=len(rows))]
    return material


def _sample_shops(rng: np.random.Generator, type_idx: np.ndarray) -> np.ndarray:
    """Shops specialise in one mid category; within it a few big shops hold most listings."""
    shops_per_mid = max(1, len(type_idx) // (40 * len(MID_CATEGORIES)))
    mid = TYPE_MID[type_idx]
    local = rng.choice(shops_per_mid, size=len(type_idx), p=zipf_weights(shops_per_mid))
    return mid * shops_per_mid + local
