"""simshop stage 4, **Users**: the shoppers and their latent taste.

From the design notes: latent taste: favourite colours, style, one brand per top category, a price tier,
shopping interests over mid categories, an activity level, and ``visual_reliance`` in [0, 1] weighing how much
the visual attributes (colour, style) versus the textual ones (brand, price tier) drive their choices.
:func:`taste_affinity` turns that taste into a user-product fit, which stage 5 (the products specific queries
describe) and stage 6 (which relevant item is clicked and ordered) use.
"""

from __future__ import annotations

import numpy as np

from retrieval_zoo.data.simshop.catalogue import zipf_weights
from retrieval_zoo.data.simshop.config import SimShopConfig, stage_rng
from retrieval_zoo.data.simshop.vocabulary import (
    BRANDS,
    COLOR_POPULARITY,
    MID_CATEGORIES,
    PRICE_TIERS,
    STYLE_POPULARITY,
    TOP_CATEGORIES,
    brands_of_top,
)


def sample_users(config: SimShopConfig) -> dict[str, np.ndarray]:
    rng = stage_rng(config, "users")
    n = config.n_users
    fav_colors = _top_k_mask(rng, np.log(COLOR_POPULARITY)[None].repeat(n, 0), 2)
    fav_styles = _top_k_mask(rng, np.log(STYLE_POPULARITY)[None].repeat(n, 0), 1)
    fav_brands = np.zeros((n, len(BRANDS)), dtype=bool)
    for t in range(len(TOP_CATEGORIES)):  # one favourite brand per top category, big brands more often
        candidates = brands_of_top(t)
        fav_brands[np.arange(n), rng.choice(candidates, size=n, p=zipf_weights(len(candidates), 0.5))] = True
    visual_reliance = rng.beta(0.7, 0.7, n)
    return {
        "fav_colors": fav_colors,
        "fav_styles": fav_styles,
        "fav_brands": fav_brands,
        "tier": rng.choice(len(PRICE_TIERS), size=n, p=[0.3, 0.35, 0.25, 0.1]),
        "visual_reliance": visual_reliance,
        # Users shop a few mid categories again and again: a sparse Dirichlet over them.
        "interests": rng.dirichlet(np.full(len(MID_CATEGORIES), 0.3), size=n),
        "activity": rng.lognormal(0.0, 0.7, n),
    }


def _top_k_mask(rng: np.random.Generator, log_weights: np.ndarray, k: int) -> np.ndarray:
    """k distinct choices per row, weighted (Gumbel top-k)."""
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    mask = np.zeros(log_weights.shape, dtype=bool)
    np.put_along_axis(mask, np.argsort(-keys, axis=1)[:, :k], True, axis=1)
    return mask


def taste_affinity(users: dict[str, np.ndarray], catalogue: dict[str, np.ndarray], user: np.ndarray,
                   product: np.ndarray) -> np.ndarray:
    """How well a product fits a user's taste, in [0, 1]; visual users weigh colour and style, textual users
    brand and price tier. user and product broadcast against each other."""
    reliance = users["visual_reliance"][user]
    visual = 0.5 * users["fav_colors"][user, catalogue["color"][product]] \
        + 0.5 * users["fav_styles"][user, catalogue["style"][product]]
    textual = 0.6 * users["fav_brands"][user, catalogue["brand"][product]] \
        + 0.4 * (users["tier"][user] == catalogue["tier"][product])
    return reliance * visual + (1 - reliance) * textual
