"""Stage-order world: MMSE's four stage levels follow a rule that the query and the item titles determine.

MMSE (Wang et al., WWW 2023 companion, arXiv 2303.11009, "multi-stage information mining") grades each search's
items ordered (3) > clicked (2) > unclicked, i.e. exposed but not clicked (1) > random (0)
(``retrieval_zoo/data/stages.py``) and trains a *ranking* loss over those levels (local comparison) next to the
*retrieval* loss (global comparison: a clicked or ordered item against the pool). This world makes the level of
every (search, item) a deterministic function of the query text and the item title, so a model that learns the
ranking signal can order a held-out search's list; the ``retrieval_only`` ablation (beta = 0) is trained on
"clicked or ordered" against the pool only.

The rule
--------
Items are ``"<category> <name>"`` (``n_categories`` categories x ``items_per_category`` names). Queries are
shopping intents (``"student dorm"``, ``"camping weekend"``, ...) that share no word with any title nor with each
other, so text overlap orders nothing: what a query wants is learnt from the logs alone. Each query gets three
categories of its own, its tiers (a seeded draw without replacement: no category is a tier of two queries). Each
of its searches exposes ``per_tier`` of the ``items_per_category`` items of each tier, at shuffled positions, and
logs

- tier 0 (the ordered category): exposure + click + order -> level 3;
- tier 1 (the clicked category): exposure + click -> level 2;
- tier 2 (the unclicked category): exposure only -> level 1;
- every other category is never shown to that query -> level 0 when sampled as a random item.

So per query, ordered > clicked > unclicked > random is an order over categories. Every tier item is shown
equally often, so the retrieval loss's positives (levels 2 and 3, weight 1 each) carry no ordered-vs-clicked
signal, and its negatives (other searches' positives in the batch, items sampled uniformly from the catalogue)
carry no unclicked-vs-random signal: only the stage ranking loss sees the order inside the engaged half and
inside the rest. Disjoint tiers keep the in-batch softmax's popularity bias out of it: an item that is a positive
of several queries turns up as an in-batch negative more often and sinks (a first draft with shared categories
had one query's ordered category, a positive of three queries, settle below its clicked one). Relevance
judgments: the three tier categories' items are E for the query, the rest I (fully judged), so the runner's
metrics do not see the order, only the logs do.

Measuring it (``stage_lists``): each test search's list is its mined levels 1-3 plus ``n_random`` items of
categories outside the query's tiers (the rule's level 0), and a scorer is judged by Kendall tau-b between its
scores and the levels, averaged over lists. With 2 items per level:

- chance (random scores): tau 0;
- ``engaged_split_tau``: scores that put the engaged half (levels 2, 3) above the rest and are random within each
  half, i.e. all the order that the retrieval loss's positives carry: 0.617;
- ``perfect_tau``: the best any scorer reaches (ties in the levels cap tau-b below 1): 0.926.

The knob ``ordered_levels=False`` removes the signal: each search exposes the same items, but which of them are
ordered, clicked or left unclicked is a fresh random draw per search (same counts), so among the exposed items
the level is no function of the text.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from retrieval_zoo.data.dataset import SCHEMA, ProductSearchDataset
from retrieval_zoo.data.stages import mine_from_logs

CATEGORIES = ("lamp", "chair", "kettle", "jacket", "sofa", "mixer", "rug", "mug", "desk", "towel", "pillow", "boots",
              "table", "clock", "scarf", "bottle", "helmet", "wallet", "candle", "basket", "mirror", "shelf",
              "hammer", "ladder", "umbrella", "guitar", "camera", "bicycle", "tent", "backpack", "sweater", "gloves",
              "stool", "blanket", "curtain", "vase", "printer", "keyboard", "speaker", "drill")
NAMES = ("aurora", "nova", "orbit", "summit", "harbor")
INTENTS = ("student dorm", "new house", "cold winter", "summer trip", "office setup", "baby shower",
           "wedding list", "camping weekend", "rainy afternoon", "movie night", "first apartment", "garden party",
           "beach holiday", "birthday surprise", "gym routine", "kitchen makeover")  # no word in common
TIER_LEVELS = (3, 2, 1)  # ordered, clicked, unclicked
ACTIONS_BY_LEVEL = {3: ("exposure", "click", "order"), 2: ("exposure", "click"), 1: ("exposure",)}


def build(seed: int = 0, n_queries: int = 12, n_categories: int = 40, items_per_category: int = 3,
          per_tier: int = 2, searches_per_query: int = 30, test_fraction: float = 0.25,
          ordered_levels: bool = True) -> ProductSearchDataset:
    """The world of the module docstring, deterministic from ``seed``; ``ordered_levels=False`` removes the rule."""
    if not (1 <= n_queries <= len(INTENTS) and 3 * n_queries < n_categories <= len(CATEGORIES)
            and 1 <= per_tier <= items_per_category <= len(NAMES)):
        raise ValueError(f"need n_queries <= {len(INTENTS)}, 3 * n_queries < n_categories <= {len(CATEGORIES)} "
                         f"and per_tier <= items_per_category <= {len(NAMES)}")
    rng = np.random.default_rng(seed)
    products = _products(CATEGORIES[:n_categories], items_per_category)
    queries = _queries(rng, n_queries, n_categories)
    searches, interactions = _logs(rng, products, queries, per_tier, searches_per_query, test_fraction,
                                   ordered_levels)
    tiers = dict(zip(queries["query"], queries["tiers"].to_list(), strict=True))
    return ProductSearchDataset(
        name=f"world-stage-order-s{seed}{'' if ordered_levels else '-shuffled'}",
        products=products.drop("kind"), queries=queries.drop("tiers"), judgments=_judgments(products, queries),
        searches=searches, interactions=interactions,
        meta={"fully_judged": True, "world": "stage_order", "ordered_levels": ordered_levels, "tiers": tiers,
              "protocol": "stage_order world (retrieval_zoo/data/worlds/stage_order.py)"})


def _products(categories: tuple[str, ...], items_per_category: int) -> pl.DataFrame:
    rows = [(category, name) for category in categories for name in NAMES[:items_per_category]]
    n = len(rows)
    return pl.DataFrame({
        "product_id": [f"p{i:04d}" for i in range(n)], "title": [f"{c} {name}" for c, name in rows],
        "description": [""] * n, "bullets": [""] * n, "brand": [name for _, name in rows], "color": [""] * n,
        "category": [f"home > {c}" for c, _ in rows], "shop_id": [None] * n, "kind": [c for c, _ in rows],
    }, schema_overrides={"shop_id": pl.Utf8})


def _queries(rng: np.random.Generator, n_queries: int, n_categories: int) -> pl.DataFrame:
    """One query per intent with its own three tier categories (ordered, clicked, unclicked), drawn without
    replacement from a seeded shuffle: no category is a tier of two queries."""
    chosen = rng.permutation(n_categories)[: 3 * n_queries].reshape(n_queries, 3)
    tiers = [[CATEGORIES[c] for c in row] for row in chosen]
    return pl.DataFrame({
        "query_id": [f"q{i:03d}" for i in range(n_queries)], "query": list(INTENTS[:n_queries]),
        "split": ["train"] * n_queries, "group": [None] * n_queries, "tiers": tiers,
    }, schema_overrides={"group": pl.Utf8})


def _judgments(products: pl.DataFrame, queries: pl.DataFrame) -> pl.DataFrame:
    return (queries.select("query_id", pl.col("tiers").alias("kind")).explode("kind")
            .join(products.select("product_id", "kind"), on="kind")
            .select("query_id", "product_id", pl.lit("E").alias("label")))


def _logs(rng: np.random.Generator, products: pl.DataFrame, queries: pl.DataFrame, per_tier: int,
          searches_per_query: int, test_fraction: float, ordered_levels: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per search and its exposure / click / order rows (levels 3, 2, 1 by the tiers of its query)."""
    by_kind = {kind[0]: ids["product_id"].to_list() for kind, ids in products.group_by("kind", maintain_order=True)}
    searches, actions = [], []
    for query_id, tiers in queries.select("query_id", "tiers").iter_rows():
        for s in range(searches_per_query):
            search_id, user_id, time = f"{query_id}-s{s:03d}", f"u{len(searches):05d}", float(len(searches))
            searches.append((search_id, query_id, user_id, time, "test" if rng.random() < test_fraction else "train"))
            items = [item for kind in tiers for item in rng.choice(by_kind[kind], per_tier, replace=False)]
            levels = np.repeat(TIER_LEVELS, per_tier)
            if not ordered_levels:  # the knob: the same exposures, the levels drawn afresh per search
                levels = rng.permutation(levels)
            for item, level, position in zip(items, levels, rng.permutation(len(items)), strict=True):
                for step, action in enumerate(ACTIONS_BY_LEVEL[int(level)]):
                    actions.append((user_id, str(item), time + 0.001 * (step + 1), action, search_id, int(position)))
    return (pl.DataFrame(searches, schema=SCHEMA["searches"], orient="row"),
            pl.DataFrame(actions, schema=SCHEMA["interactions"], orient="row"))


# -- evaluation lists and reference taus ---------------------------------------------------------------
def stage_lists(dataset: ProductSearchDataset, split: str = "test", n_random: int = 2,
                seed: int = 0) -> pl.DataFrame:
    """Each ``split`` search's list: its levels 1-3 mined from the logs (``stages.mine_from_logs``, as the data
    module mines them) plus ``n_random`` items drawn uniformly from the categories outside its query's tiers
    (the rule's level 0). Columns search_id, product_id, level (Int64), one row per list item."""
    searches = dataset.searches.filter(pl.col("split") == split).join(
        dataset.queries.select("query_id", "query"), on="query_id", how="left", maintain_order="left")
    product_ids = dataset.products["product_id"].to_list()
    kinds = np.array([title.split()[0] for title in dataset.products["title"]])
    mined = mine_from_logs(dataset.interactions, searches["search_id"].to_list(), product_ids)
    rng = np.random.default_rng(seed)
    rows = []
    for unit, (search_id, query) in enumerate(searches.select("search_id", "query").iter_rows()):
        items, levels = mined.of(unit)
        outside = np.flatnonzero(~np.isin(kinds, dataset.meta["tiers"][query]))
        rows += [(search_id, product_ids[i], int(level)) for i, level in zip(items, levels, strict=True)]
        rows += [(search_id, product_ids[i], 0) for i in rng.choice(outside, n_random, replace=False)]
    return pl.DataFrame(rows, schema={"search_id": pl.Utf8, "product_id": pl.Utf8, "level": pl.Int64},
                        orient="row")


def _pair_counts(levels: np.ndarray) -> tuple[int, int]:
    """(all pairs, pairs tied in level) of one list."""
    n = len(levels)
    _, counts = np.unique(levels, return_counts=True)
    return n * (n - 1) // 2, int((counts * (counts - 1) // 2).sum())


def perfect_tau(levels: np.ndarray) -> float:
    """tau-b of distinct scores that sort the list by level: sqrt(1 - level-tied pairs / pairs)."""
    pairs, tied = _pair_counts(np.asarray(levels))
    return math.sqrt((pairs - tied) / pairs)


def engaged_split_tau(levels: np.ndarray) -> float:
    """Expected tau-b of distinct scores that put levels 2-3 above levels 0-1 and are random within each half:
    the cross-half pairs are concordant, every other untied pair is a coin flip (expected 0)."""
    levels = np.asarray(levels)
    pairs, tied = _pair_counts(levels)
    engaged = int((levels >= 2).sum())
    return engaged * (len(levels) - engaged) / math.sqrt(pairs * (pairs - tied))
