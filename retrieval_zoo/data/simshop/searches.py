"""simshop stage 5, **Searches**: who searches when, for what intent, and with which query text.

From the design notes: over ``n_days`` days a user issues searches from an intent at one of three
specificities: broad (a mid category, "shoes"), mid (a type, "running shoes") or specific (a type plus one or
two attributes of an actual product the user would like, "red striped running shoes"). Visual users name
colour and style more often. The text gets synonyms, word-order noise and typos. Days split into train, valid
and test.

An intent is encoded as integer fields (:data:`INTENT_FIELDS`; ``-1`` = not named); stage 7 labels products
against the distinct intents that :func:`index_intents` collects.
"""

from __future__ import annotations

import random

import numpy as np

from retrieval_zoo.data.simshop.config import SimShopConfig, stage_random, stage_rng
from retrieval_zoo.data.simshop.users import taste_affinity
from retrieval_zoo.data.simshop.vocabulary import (
    BRANDS,
    COLOR_SYNONYMS,
    COLORS,
    MATERIALS,
    MID_CATEGORIES,
    PRODUCT_TYPES,
    STYLE_SYNONYMS,
    STYLES,
    TYPE_MID,
)

BROAD, MID_SPECIFICITY, SPECIFIC = 0, 1, 2
SPECIFICITIES = ("broad", "mid", "specific")
ATTRIBUTES = ("brand", "color", "style", "material")


def sample_searches(config: SimShopConfig, catalogue: dict[str, np.ndarray],
                    users: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = stage_rng(config, "searches")
    n = config.n_searches
    # Leave room at the end of the day so clicks and orders stay in the search's day (and split).
    timestamp = np.sort(np.repeat(np.arange(config.n_days), config.searches_per_day) + rng.uniform(0, 0.99, n))
    user = rng.choice(config.n_users, size=n, p=users["activity"] / users["activity"].sum())
    specificity = rng.choice(3, size=n, p=[config.broad_share, 1 - config.broad_share - config.specific_share,
                                           config.specific_share])
    mid = _gumbel_argmax(rng, np.log(users["interests"][user] + 1e-12))
    # The type follows the assortment: shoppers look for what the shop stocks.
    stock = np.bincount(catalogue["type"], minlength=len(PRODUCT_TYPES)).astype(float)
    type_given_mid = np.where(TYPE_MID[None, :] == np.arange(len(MID_CATEGORIES))[:, None], stock[None, :], 0)
    product_type = _gumbel_argmax(rng, np.log(type_given_mid[mid] + 1e-12))

    intent = {name: np.full(n, -1) for name in ATTRIBUTES}
    specific = np.flatnonzero(specificity == SPECIFIC)
    target = _sample_targets(rng, config, catalogue, users, user[specific], product_type[specific])
    named = _sample_named_attributes(rng, users["visual_reliance"][user[specific]])
    for a, name in enumerate(ATTRIBUTES):
        intent[name][specific] = np.where(named[:, a], catalogue[name][target], -1)
    return {
        "timestamp": timestamp, "user": user, "specificity": specificity, "mid": mid,
        "type": np.where(specificity == BROAD, -1, product_type), **intent,
    }


def _gumbel_argmax(rng: np.random.Generator, log_weights: np.ndarray) -> np.ndarray:
    return np.argmax(log_weights + rng.gumbel(size=log_weights.shape), axis=1)


def _sample_targets(rng: np.random.Generator, config: SimShopConfig, catalogue: dict[str, np.ndarray],
                    users: dict[str, np.ndarray], user: np.ndarray, product_type: np.ndarray) -> np.ndarray:
    """The product a specific query describes: one of the type's products, tilted towards the user's taste.
    Drawing attribute values from a real product guarantees every specific query has an exact match."""
    target = np.empty(len(user), dtype=np.int64)
    for t in range(len(PRODUCT_TYPES)):
        rows = np.flatnonzero(product_type == t)
        if not len(rows):
            continue
        candidates = np.flatnonzero(catalogue["type"] == t)
        fit = taste_affinity(users, catalogue, user[rows, None], candidates[None, :])
        taste = config.preference_strength * fit
        target[rows] = candidates[_gumbel_argmax(rng, taste)]
    return target


def _sample_named_attributes(rng: np.random.Generator, visual_reliance: np.ndarray) -> np.ndarray:
    """Which attributes a specific query names: one, sometimes two; visual users name colour and style."""
    vr = visual_reliance[:, None]
    weights = np.concatenate([1 - vr, vr, 0.6 * vr, 0.6 * (1 - vr)], axis=1) + 0.05  # brand, color, style, material
    keys = np.log(weights) + rng.gumbel(size=weights.shape)
    order = np.argsort(-keys, axis=1)
    named = np.zeros(weights.shape, dtype=bool)
    named[np.arange(len(vr)), order[:, 0]] = True
    second = rng.random(len(vr)) < 0.35
    named[np.flatnonzero(second), order[second, 1]] = True
    return named


def search_split(config: SimShopConfig, timestamp: np.ndarray) -> np.ndarray:
    day = np.floor(timestamp)
    return np.where(day < config.train_days, "train",
                    np.where(day < config.train_days + config.valid_days, "valid", "test"))



def write_queries(config: SimShopConfig, searches: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Render each search's intent as text; return the distinct texts (first-use order) and each search's."""
    rnd = stage_random(config, "queries")
    text_index: dict[str, int] = {}
    search_query = np.empty(len(searches["user"]), dtype=np.int64)
    for i in range(len(search_query)):
        text = _query_text(rnd, config, {key: int(values[i]) for key, values in searches.items()
                                         if key not in ("timestamp", "user")})
        search_query[i] = text_index.setdefault(text, len(text_index))
    return list(text_index), search_query


def _query_text(rnd: random.Random, config: SimShopConfig, intent: dict[str, int]) -> str:
    def pick(canonical: str, synonyms: tuple[str, ...]) -> str:
        return rnd.choice(synonyms) if synonyms and rnd.random() < config.synonym_rate else canonical

    if intent["specificity"] == BROAD:
        terms = MID_CATEGORIES[intent["mid"]].terms
        words = [pick(terms[0], terms[1:])]
    else:
        product_type = PRODUCT_TYPES[intent["type"]]
        words = []
        if intent["brand"] >= 0:
            words.append(BRANDS[intent["brand"]].lower())
        if intent["color"] >= 0:
            color = COLORS[intent["color"]]
            words.append(pick(color, COLOR_SYNONYMS.get(color, ())))
        if intent["style"] >= 0:
            style = STYLES[intent["style"]]
            words.append(pick(style, STYLE_SYNONYMS.get(style, ())))
        if intent["material"] >= 0:
            words.append(MATERIALS[intent["material"]])
        words.append(pick(product_type.name, product_type.synonyms))
        if len(words) > 1 and rnd.random() < config.word_order_noise:
            rnd.shuffle(words)
    text = " ".join(words)
    return _add_typo(rnd, text) if rnd.random() < config.typo_rate else text


def _add_typo(rnd: random.Random, text: str) -> str:
    """One keyboard slip in a word of four letters or more: a deletion, a swap, a doubled or a wrong letter."""
    words = text.split(" ")
    long_words = [i for i, word in enumerate(words) if len(word) >= 4]
    if not long_words:
        return text
    i = rnd.choice(long_words)
    word, j = words[i], rnd.randrange(1, len(words[i]) - 1)
    edit = rnd.randrange(4)
    if edit == 0:
        word = word[:j] + word[j + 1:]
    elif edit == 1:
        word = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    elif edit == 2:
        word = word[:j] + word[j] + word[j:]
    else:
        word = word[:j] + rnd.choice("abcdefghijklmnopqrstuvwxyz") + word[j + 1:]
    words[i] = word
    return " ".join(words)


INTENT_FIELDS = ("specificity", "mid", "type", *ATTRIBUTES)


def index_intents(searches: dict[str, np.ndarray], search_query: np.ndarray,
                  n_queries: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Distinct intents, each search's intent, and each query text's intent (that of its first search: two
    intents render to the same text only through a rare typo collision)."""
    stacked = np.stack([searches[name] for name in INTENT_FIELDS], axis=1)
    unique, search_intent = np.unique(stacked, axis=0, return_inverse=True)
    search_intent = search_intent.reshape(-1)
    first_search = np.full(n_queries, len(search_query))
    np.minimum.at(first_search, search_query, np.arange(len(search_query)))
    intents = {name: unique[:, k] for k, name in enumerate(INTENT_FIELDS)}
    return intents, search_intent, search_intent[first_search]

