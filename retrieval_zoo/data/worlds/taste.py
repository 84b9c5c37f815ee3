"""Taste world: a broad query, and the ordered item is fixed by the brand the user's earlier clicks show.

The mechanism: MGDSPR's user behaviour attention (Li et al., KDD 2021, section 3.3: the query attends to the
real-time, short-term and long-term behaviour; 3.4: the [CLS] fusion). The query text carries no information
here, so the only way to rank a search's ordered item high is to read the user's history.

**Rule.** One query text ("gadget") for every search. The catalogue holds ``n_brands`` x ``items_per_brand``
gadgets, all Exact for it (the text cannot separate them), and ``n_offtopic`` garden tools (not relevant). A
gadget's brand is its ``brand`` column (a behaviour side feature) and a word of its title. Each user has one fixed
taste brand; in each of their searches (one a day, the last one is test, the others train) they click and order
a random gadget of that brand, and before each search they click ``browse_clicks`` random garden tools outside
any search (history, never a training positive). A test search's history (features.py: the actions strictly
before it) therefore mixes informative items (the taste brand's clicks and orders) with uninformative ones (the
garden clicks). ``noise_clicks`` > 0 adds random clicks on other brands' gadgets inside each search (training
positives that carry no taste; 0 by default, see the model card for what they do).

**Levels.** Knowing the taste puts the ``items_per_brand`` gadgets of the brand in the top 10, so a model that
reads the history perfectly reaches p_recall@10 = 1 with ``items_per_brand <= 10``. Without the user every gadget
is equally likely to be ordered (brands are balanced over users), so chance p_recall@10 is
``chance_p_recall(10, n_brands * items_per_brand)`` = 10 / 200 = 0.05 at the defaults.

**Knob.** ``informative=False`` removes the signal: each search's ordered item is drawn from a fresh random
brand, so earlier orders say nothing about the next one and the full model must stay at chance too.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_zoo.data.dataset import SCHEMA, ProductSearchDataset

QUERY = "gadget"
BRANDS = ("acme", "bolt", "crest", "delta", "ember", "flint", "grove", "haven", "iris", "jade", "kite", "lumen",
          "maple", "nova", "onyx", "pike", "quill", "raven", "sable", "tide", "umber", "vale", "willow", "yarrow")
GARDEN_BRANDS = ("terra", "moss", "fern")
GARDEN_TOOLS = ("rake", "spade", "hoe", "trowel", "shears")
GADGETS, GARDEN = "Home > Gadgets", "Garden > Tools"
COLOURS = ("red", "blue", "green", "black", "white", "grey", "pink", "gold", "silver", "brown")


def chance_p_recall(k: int, n_products: int) -> float:
    """p_recall@k of a ranking that ignores the user: the ordered item is uniform over the catalogue."""
    return min(k, n_products) / n_products


def build(seed: int = 0, n_brands: int = 20, items_per_brand: int = 10, n_offtopic: int = 40,
          n_users: int = 240, searches_per_user: int = 6, browse_clicks: int = 2, noise_clicks: int = 0,
          informative: bool = True) -> ProductSearchDataset:
    """The taste world (rule, levels and knob in the module docstring); deterministic from ``seed``."""
    if n_brands > len(BRANDS):
        raise ValueError(f"at most {len(BRANDS)} brands; got {n_brands}")
    rng = np.random.default_rng(seed)
    products = _products(n_brands, items_per_brand, n_offtopic)
    brand_of = products["brand"].to_list()
    users = pl.DataFrame({"user_id": [f"u{u:04d}" for u in range(n_users)],
                          "taste": [BRANDS[u % n_brands] for u in range(n_users)]})
    searches, interactions = _behaviour(rng, users, brand_of, searches_per_user, noise_clicks, browse_clicks,
                                       informative)
    queries = pl.DataFrame({"query_id": ["q0"], "query": [QUERY], "split": ["train"], "group": [None]},
                           schema_overrides={"group": pl.Utf8})
    gadgets = products.filter(pl.col("category") == GADGETS)["product_id"]
    judgments = pl.DataFrame({"query_id": "q0", "product_id": gadgets, "label": "E"})
    meta = {"protocol": f"taste world: last search per user is test (seed {seed})", "fully_judged": True,
            "world": {"n_brands": n_brands, "items_per_brand": items_per_brand, "n_users": n_users,
                      "searches_per_user": searches_per_user, "noise_clicks": noise_clicks,
                      "informative": informative, "seed": seed}}
    return ProductSearchDataset(name=f"taste-s{seed}" + ("" if informative else "-uninformative"),
                                products=products, queries=queries, judgments=judgments, searches=searches,
                                interactions=interactions, users=users, meta=meta)


def _products(n_brands: int, items_per_brand: int, n_offtopic: int) -> pl.DataFrame:
    """``items_per_brand`` gadgets per brand (the brand is a column and a title word, the rest is shared), then
    ``n_offtopic`` garden tools of their own brands (not relevant to the query: browsing noise)."""
    rows = [(brand, f"{COLOURS[i % len(COLOURS)]} {brand} gadget mk{i // len(COLOURS) + 1}", GADGETS)
            for brand in BRANDS[:n_brands] for i in range(items_per_brand)]
    rows += [(f"{GARDEN_BRANDS[i % len(GARDEN_BRANDS)]}", f"{GARDEN_BRANDS[i % len(GARDEN_BRANDS)]} "
              f"{GARDEN_TOOLS[i % len(GARDEN_TOOLS)]} no{i}", GARDEN) for i in range(n_offtopic)]
    n = len(rows)
    return pl.DataFrame({
        "product_id": [f"p{i:04d}" for i in range(n)], "title": [title for _, title, _ in rows],
        "description": [""] * n, "bullets": [""] * n, "brand": [brand for brand, _, _ in rows],
        "color": [""] * n, "category": [category for _, _, category in rows],
        "shop_id": [f"shop_{brand}" for brand, _, _ in rows],
    })


def _behaviour(rng: np.random.Generator, users: pl.DataFrame, brand_of: list[str], searches_per_user: int,
               noise_clicks: int, browse_clicks: int, informative: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One search a day per user (the last one is test): browsing clicks on garden tools before it, then the taste
    item clicked and ordered and the noise gadgets (other brands) clicked; every shown item is an exposure."""
    brands = np.array(brand_of)
    gadget = np.array([b in BRANDS for b in brand_of])
    product_ids = [f"p{i:04d}" for i in range(len(brands))]
    distinct = [b for b in BRANDS if b in brand_of]
    searches, actions = [], []
    for user, taste in users.iter_rows():
        start = float(rng.uniform(0.0, 0.5))  # users' searches interleave in time
        for s in range(searches_per_user):
            search_id, day = f"{user}-s{s}", 1.0 + start + s
            split = "test" if s == searches_per_user - 1 else "train"
            searches.append((search_id, "q0", user, day, split))
            brand = taste if informative else distinct[rng.integers(len(distinct))]
            ordered = int(rng.choice(np.flatnonzero(brands == brand)))
            noise = rng.choice(np.flatnonzero(gadget & (brands != brand)), size=noise_clicks, replace=False).tolist()
            browsed = rng.choice(np.flatnonzero(~gadget), size=browse_clicks, replace=False).tolist()
            for rank, item in enumerate(browsed):  # clicks outside any search: history, not training positives
                actions.append((user, product_ids[item], day - 0.5 + 0.01 * rank, "click", None, None))
            shown = [ordered, *noise]
            for position, item in enumerate(rng.permutation(shown).tolist()):
                actions.append((user, product_ids[item], day + 0.001, "exposure", search_id, position))
            for rank, item in enumerate(noise):
                actions.append((user, product_ids[item], day + 0.01 * (rank + 1), "click", search_id, None))
            actions.append((user, product_ids[ordered], day + 0.05, "click", search_id, None))
            actions.append((user, product_ids[ordered], day + 0.06, "order", search_id, None))
    return (pl.DataFrame(searches, schema=SCHEMA["searches"], orient="row"),
            pl.DataFrame(actions, schema=SCHEMA["interactions"], orient="row"))
