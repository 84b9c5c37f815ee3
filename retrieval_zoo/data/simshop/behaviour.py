"""simshop stage 6, **Behaviour**: the logging policy's exposures, then clicks, collects and orders.

From the design notes: a non-personalised logging policy (a noisy lexical title matcher) shows
``exposure_size`` items. Clicks follow a position-biased cascade-free click model: P(click) =
examination(position) x attractiveness, attractiveness = click_noise + (1 - click_noise) x
(1 - exp(-relevance x preference)), preference = exp(preference_strength x (affinity - mean affinity)).
The user's taste therefore decides *which* relevant item is clicked, collected and ordered; with
``preference_strength = 0`` their history carries no signal about that choice. Relevance is the click gain
of the item's stage 7 label (:data:`CLICK_GAIN`); affinity is :func:`.users.taste_affinity`, centred on its
population mean :data:`MEAN_AFFINITY`.
"""

from __future__ import annotations

import re

import numpy as np

from retrieval_zoo.data.simshop.config import SimShopConfig, stage_rng
from retrieval_zoo.data.simshop.users import taste_affinity

_TOKEN = re.compile(r"[a-z0-9]+")


def _lexical_tokens(text: str) -> list[str]:
    """Lower-cased words with a crude plural strip; the logging policy's whole linguistics."""
    tokens = []
    for token in _TOKEN.findall(text.lower()):
        if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
            token = token[:-1]
        if token not in tokens:
            tokens.append(token)
    return tokens


def log_exposures(config: SimShopConfig, titles: list[str], query_texts: list[str],
                  search_query: np.ndarray) -> np.ndarray:
    """The logging policy: rank titles by the IDF of matched query words plus noise; show the top items.

    It is not personalised and reads titles only, so it under-exposes image-only products for colour queries
    and treats every user alike: the biases a learned retriever should overcome."""
    rng = stage_rng(config, "exposures")
    n_products, k = len(titles), config.exposure_size
    postings: dict[str, list[int]] = {}
    for p, title in enumerate(titles):
        for token in _lexical_tokens(title):
            postings.setdefault(token, []).append(p)
    idf = {token: np.log(n_products / len(rows)) + 0.1 for token, rows in postings.items()}
    index = {token: np.array(rows) for token, rows in postings.items()}

    exposed = np.empty((len(search_query), k), dtype=np.int64)
    order = np.argsort(search_query, kind="stable")
    boundaries = np.flatnonzero(np.diff(search_query[order])) + 1
    for group in np.split(order, boundaries):
        text = query_texts[search_query[group[0]]]
        score = np.zeros(n_products)
        matched = [token for token in _lexical_tokens(text) if token in index]
        for token in matched:
            score[index[token]] += idf[token]
        noise_scale = config.logging_noise * (np.mean([idf[t] for t in matched]) if matched else 1.0)
        exposed[group] = _noisy_top_k(rng, score, len(group), k, noise_scale)
    return exposed


def _noisy_top_k(rng: np.random.Generator, score: np.ndarray, n_lists: int, k: int, noise: float) -> np.ndarray:
    candidates = np.flatnonzero(score > 0)
    if len(candidates) < k:  # too few matches (e.g. a typo): pad with random catalogue items
        others = np.flatnonzero(score <= 0)
        filler = np.argsort(rng.random((n_lists, len(others))), axis=1)[:, : k - len(candidates)]
        candidates_noisy = score[candidates][None, :] + noise * rng.standard_normal((n_lists, len(candidates)))
        ranked = candidates[np.argsort(-candidates_noisy, axis=1)]
        return np.concatenate([ranked, others[filler]], axis=1)
    noisy = score[candidates][None, :] + noise * rng.standard_normal((n_lists, len(candidates)))
    top = np.argpartition(-noisy, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(noisy, top, axis=1), axis=1), axis=1)
    return candidates[top]


CLICK_GAIN = np.array([1.0, 0.25, 0.06, 0.02])  # attractiveness of E, S, C, I before taste
ORDER_RATE = 0.8  # chance of buying when the best clicked item is an exact match the user likes
MEAN_AFFINITY = 0.25  # about the average user-product affinity
COLLECT_RATE = 0.12


def simulate_behaviour(config: SimShopConfig, catalogue: dict[str, np.ndarray], users: dict[str, np.ndarray],
                       searches: dict[str, np.ndarray], exposed: np.ndarray,
                       label: np.ndarray) -> dict[str, np.ndarray]:
    """Clicks, collects and at most one order per search, all [n_searches, exposure_size] masks like
    ``exposed`` (product indices) and ``label`` (their ESCI codes for the search's intent)."""
    rng = stage_rng(config, "behaviour")
    n, k = exposed.shape
    relevance = CLICK_GAIN[label]
    # Centred on the population's mean affinity, so taste tilts choices without moving the overall click rate.
    affinity = taste_affinity(users, catalogue, searches["user"][:, None], exposed)
    preference = np.exp(config.preference_strength * (affinity - MEAN_AFFINITY))
    examination = 1.0 / (1.0 + np.arange(k)) ** config.position_bias
    # A saturating map keeps taste discriminating even for very relevant items (a hard cap at 1 would not).
    attractiveness = config.click_noise + (1 - config.click_noise) * -np.expm1(-relevance * preference)
    clicked = rng.random((n, k)) < examination[None, :] * attractiveness
    collected = clicked & (rng.random((n, k)) < COLLECT_RATE * (0.5 + 0.5 * preference))
    # The order goes to one clicked item, chosen by relevance x taste; buying at all depends on the best one.
    worth = np.where(clicked, relevance * preference, 0.0)
    buys = rng.random(n) < ORDER_RATE * -np.expm1(-2 * worth.max(axis=1))
    choice = np.argmax(np.where(worth > 0, np.log(np.maximum(worth, 1e-12)) + rng.gumbel(size=(n, k)), -np.inf),
                       axis=1)
    ordered = np.zeros((n, k), dtype=bool)
    ordered[np.flatnonzero(buys), choice[buys]] = True
    return {"click": clicked, "collect": collected, "order": ordered}
