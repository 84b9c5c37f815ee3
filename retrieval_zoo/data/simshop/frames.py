"""simshop's output tables: the stages' arrays as the canonical :class:`ProductSearchDataset` frames.

Not a stage of its own: it writes what stages 1-7 drew. From the design notes: the query split rule: a query
text is "test" if any test-day search used it, else "valid" if any valid-day search did, else "train".
Behaviour-based training and evaluation use the per-search split in ``searches.parquet``. Columns beyond the
canonical schema: products get ``product_type, material, style, price_tier, price, image_only`` and the ground
truth ``latent_color, latent_style`` (for analysis and tests only: a model that reads them is cheating);
queries get ``specificity`` and ``intent``; searches get ``specificity``; users carry the latent taste.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import polars as pl

from retrieval_zoo.data.simshop.config import GENERATOR_VERSION, SimShopConfig
from retrieval_zoo.data.simshop.judgments import IRRELEVANT, LABELS
from retrieval_zoo.data.simshop.searches import ATTRIBUTES, BROAD, SPECIFICITIES
from retrieval_zoo.data.simshop.vocabulary import (
    BRANDS,
    COLORS,
    MATERIALS,
    MID_CATEGORIES,
    PRICE_TIERS,
    PRODUCT_TYPES,
    STYLES,
    TYPE_MID,
)

PROTOCOL = ("simshop: simulated shop; behaviour split by day (train days, then valid, then test); "
            "judgments from ground-truth intents, fully judged (missing pair = I)")


def dataset_meta(config: SimShopConfig) -> dict:
    train, valid = config.train_days, config.train_days + config.valid_days
    return {
        "generator": "simshop",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "seed": config.seed,
        "fully_judged": True,
        "label_source": "behaviour",
        "protocol": PROTOCOL,
        "image_size": config.image_size,
        "split_days": {"train": [0, train], "valid": [train, valid], "test": [valid, config.n_days]},
        "query_split_rule": "test if any test search used the text, else valid if any valid search did, else train",
        "latent_columns": {"products": ["latent_color", "latent_style"]},
    }


def _ids(prefix: str, index: np.ndarray, width: int) -> pl.Series:
    """String ids ("p000042") for integer indices: format each distinct id once, then gather (fast for 1M rows)."""
    index = np.asarray(index, dtype=np.int64)
    distinct = [f"{prefix}{i:0{width}d}" for i in range(int(index.max()) + 1 if len(index) else 0)]
    return pl.Series(distinct, dtype=pl.Utf8).gather(index)


def products_frame(catalogue: dict[str, np.ndarray], titles: list, descriptions: list, bullets: list) -> pl.DataFrame:
    n = len(titles)
    image_only = catalogue["image_only"]
    color = np.array(COLORS)[catalogue["color"]]
    style = np.array(STYLES)[catalogue["style"]]
    categories = np.array([f"{MID_CATEGORIES[TYPE_MID[t]].top} > {MID_CATEGORIES[TYPE_MID[t]].name} > "
                           f"{PRODUCT_TYPES[t].name.title()}" for t in range(len(PRODUCT_TYPES))])
    return pl.DataFrame({
        "product_id": _ids("p", np.arange(n), 6),
        "title": titles,
        "description": descriptions,
        "bullets": bullets,
        "brand": np.array(BRANDS)[catalogue["brand"]],
        "color": np.where(image_only, "", color),
        "category": categories[catalogue["type"]],
        "shop_id": _ids("shop", catalogue["shop"], 4),
        "product_type": np.array([t.name for t in PRODUCT_TYPES])[catalogue["type"]],
        "material": np.array(MATERIALS)[catalogue["material"]],
        "style": np.where(image_only, "", style),
        "price_tier": np.array(PRICE_TIERS)[catalogue["tier"]],
        "price": catalogue["price"].astype(np.float64),
        "image_only": image_only,
        "latent_color": color,
        "latent_style": style,
    })


def _intent_description(intents: dict[str, np.ndarray], i: int) -> str:
    if intents["specificity"][i] == BROAD:
        return f"category={MID_CATEGORIES[intents['mid'][i]].name}"
    parts = [f"type={PRODUCT_TYPES[intents['type'][i]].name}"]
    vocab = {"brand": BRANDS, "color": COLORS, "style": STYLES, "material": MATERIALS}
    parts += [f"{name}={vocab[name][intents[name][i]]}" for name in ATTRIBUTES if intents[name][i] >= 0]
    return ";".join(parts)


def _query_group(intents: dict[str, np.ndarray]) -> np.ndarray:
    """broad; image_attr when colour or style is named (image-only products show it only in pixels); else
    text_attr (type, brand, material: always written in text)."""
    image_attr = (intents["color"] >= 0) | (intents["style"] >= 0)
    return np.where(intents["specificity"] == BROAD, "broad", np.where(image_attr, "image_attr", "text_attr"))


def queries_frame(query_texts: list[str], query_intent: np.ndarray, intents: dict[str, np.ndarray],
                  search_query: np.ndarray, search_split: np.ndarray) -> pl.DataFrame:
    n = len(query_texts)
    rank = {"train": 0, "valid": 1, "test": 2}
    latest = np.zeros(n, dtype=np.int64)
    np.maximum.at(latest, search_query, np.vectorize(rank.get)(search_split))
    descriptions = np.array([_intent_description(intents, i) for i in range(len(intents["mid"]))])
    return pl.DataFrame({
        "query_id": _ids("q", np.arange(n), 6),
        "query": query_texts,
        "split": np.array(["train", "valid", "test"])[latest],
        "group": _query_group(intents)[query_intent],
        "specificity": np.array(SPECIFICITIES)[intents["specificity"][query_intent]],
        "intent": descriptions[query_intent],
    })


def judgments_frame(labels: np.ndarray, query_intent: np.ndarray) -> pl.DataFrame:
    """The E/S/C rows of every query text, copied from its intent's row of the label matrix."""
    intent_rows, products = np.nonzero(labels < IRRELEVANT)  # row-major: grouped by intent, products ascending
    per_intent = np.bincount(intent_rows, minlength=len(labels))
    intent_start = np.concatenate([[0], np.cumsum(per_intent)[:-1]])
    lengths = per_intent[query_intent]
    query = np.repeat(np.arange(len(query_intent)), lengths)
    # Position of each output row inside its intent's block, then its index into the nonzero arrays.
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    source = intent_start[query_intent][query] + within
    return pl.DataFrame({
        "query_id": _ids("q", query, 6),
        "product_id": _ids("p", products[source], 6),
        "label": pl.Series(LABELS, dtype=pl.Utf8).gather(labels[intent_rows[source], products[source]]),
    })


def searches_frame(searches: dict[str, np.ndarray], search_query: np.ndarray, split: np.ndarray) -> pl.DataFrame:
    n = len(search_query)
    return pl.DataFrame({
        "search_id": _ids("s", np.arange(n), 7),
        "query_id": _ids("q", search_query, 6),
        "user_id": _ids("u", searches["user"], 6),
        "timestamp": searches["timestamp"].astype(np.float64),
        "split": split,
        "specificity": np.array(SPECIFICITIES)[searches["specificity"]],
    })


# Actions happen in this order after the search, a few seconds apart (1e-5 day ~ 1 s).
ACTION_DELAY = {"exposure": 0.0, "click": 2e-4, "collect": 1e-3, "order": 2e-3}


def interactions_frame(searches: dict[str, np.ndarray], exposed: np.ndarray,
                       behaviour: dict[str, np.ndarray]) -> pl.DataFrame:
    n, k = exposed.shape
    masks = {"exposure": np.ones((n, k), dtype=bool), **behaviour}
    columns: dict[str, list[np.ndarray]] = {"search": [], "position": [], "action": [], "timestamp": []}
    for a, (action, mask) in enumerate(masks.items()):
        search, position = np.nonzero(mask)
        columns["search"].append(search)
        columns["position"].append(position)
        columns["action"].append(np.full(len(search), a))
        columns["timestamp"].append(searches["timestamp"][search] + ACTION_DELAY[action] + position * 1e-5)
    search, position, action, timestamp = (np.concatenate(columns[c]) for c in columns)
    order = np.lexsort((position, action, timestamp))
    search, position, action, timestamp = search[order], position[order], action[order], timestamp[order]
    return pl.DataFrame({
        "user_id": _ids("u", searches["user"][search], 6),
        "product_id": _ids("p", exposed[search, position], 6),
        "timestamp": timestamp.astype(np.float64),
        "action": pl.Series(list(masks), dtype=pl.Utf8).gather(action),
        "search_id": _ids("s", search, 7),
        "position": position.astype(np.int32),
    })


def users_frame(users: dict[str, np.ndarray]) -> pl.DataFrame:
    n = len(users["visual_reliance"])

    def names(mask: np.ndarray, vocab: tuple[str, ...]) -> list[list[str]]:
        return [[vocab[j] for j in np.flatnonzero(row)] for row in mask]

    interests = users["interests"]
    return pl.DataFrame({
        "user_id": _ids("u", np.arange(n), 6),
        "user_type": np.where(users["visual_reliance"] >= 0.5, "visual", "textual"),
        "visual_reliance": users["visual_reliance"].astype(np.float64),
        "favourite_colors": names(users["fav_colors"], COLORS),
        "favourite_styles": names(users["fav_styles"], STYLES),
        "favourite_brands": names(users["fav_brands"], BRANDS),
        "price_tier": np.array(PRICE_TIERS)[users["tier"]],
        "favourite_categories": names(interests >= 0.15, tuple(m.name for m in MID_CATEGORIES)),
        "activity": users["activity"].astype(np.float64),
    }, schema_overrides={"favourite_colors": pl.List(pl.Utf8), "favourite_styles": pl.List(pl.Utf8),
                         "favourite_brands": pl.List(pl.Utf8), "favourite_categories": pl.List(pl.Utf8)})
