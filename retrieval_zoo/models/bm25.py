"""BM25 baseline (Robertson & Zaragoza, 2009) through bm25s (Lù, 2024): lexical retrieval, no training.

It is a retriever rather than a two-tower model: the runner calls ``retrieve`` instead of encoding vectors
for faiss. Items are indexed by the composed item text every other model reads (``data.features.item_text``:
title, brand, category leaf and description with per-field word budgets, see retrieval_zoo/data/features.py),
so the lexical baseline and the learned models see the same words; k1 = 1.5, b = 0.75 (bm25s's Lucene
defaults), English stop words removed, no stemming (config keys).

``fields`` (a list of product columns) instead indexes those columns whole, joined by spaces: the index before
the composed item text existed, kept for comparisons. ``fields: null`` (the default) uses the item text.

Selection on valid (``item_text_choices``): BM25 has no weights to train, but which fields it indexes is a choice
a researcher tunes on held-out queries, as every trained model here picks its state by ``val/<monitor>``. Each
choice changes some of the ``data.features.item_text`` budgets; the runner scores the default text and every
choice on the valid queries (``select_item_text``) and indexes the best for the test search (ties keep the
earlier). Why: descriptions help BM25 on Icecat (real descriptions, +0.064 NDCG@10 on test) and hurt it on
simshop (whose descriptions repeat other products' vocabulary, -0.010); a fixed text would handicap it on one of
them. The test split is never seen by the choice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from retrieval_zoo.data.datamodule import RetrievalDataModule
from retrieval_zoo.data.features import check_item_text, columns_in_text, compose_item_texts


@dataclass
class BM25Config:
    """The ``model:`` section of configs/bm25.yaml (each key documented there)."""

    k1: float = 1.5
    b: float = 0.75
    stopwords: str | None = "en"
    fields: list[str] | None = None
    item_text_choices: list[dict[str, int]] = field(default_factory=lambda: [{"description": 0}])

    def __post_init__(self) -> None:
        for choice in self.item_text_choices:
            if not isinstance(choice, Mapping) or not choice:
                raise ValueError(f"model.item_text_choices entries change data.features.item_text budgets, e.g. "
                                 f"{{description: 0}}; got {choice!r}")


@dataclass
class TextChoice:
    """One candidate indexed text and its valid score."""

    name: str
    score: float


class BM25Retriever:
    required_fields: set[str] = set()
    optional_fields: set[str] = set()
    trainable = False

    def __init__(self, config: BM25Config | None = None):
        config = config or BM25Config()
        self.k1, self.b, self.stopwords = config.k1, config.b, config.stopwords
        self.fields = tuple(config.fields) if config.fields else None
        # choices change the composed item text, which named ``fields`` replace: none then
        self.item_text_choices = [] if self.fields else [dict(choice) for choice in config.item_text_choices]
        self.item_text_change: dict[str, int] = {}  # the chosen change to the item text ({}: the default)
        self.index_seconds = 0.0
        self.n_items = 0

    @classmethod
    def text_columns(cls, config: BM25Config, item_text: Mapping[str, int]) -> set[str]:
        """The product columns the index may read: the named ``fields``, else the item text under each choice."""
        if config.fields:
            return set(config.fields)
        return set().union(*(columns_in_text({**item_text, **choice}) for choice in [{}, *config.item_text_choices]))

    def index(self, datamodule: RetrievalDataModule) -> None:
        import bm25s

        corpus = self.corpus(datamodule)
        started = time.perf_counter()
        self.retriever = bm25s.BM25(k1=self.k1, b=self.b)
        self.retriever.index(bm25s.tokenize(corpus, stopwords=self.stopwords, show_progress=False),
                             show_progress=False)
        self.index_seconds = time.perf_counter() - started
        self.n_items = len(corpus)

    def corpus(self, datamodule: RetrievalDataModule) -> list[str]:
        """The indexed text of each catalogue item: the composed item text, or the ``fields`` columns joined."""
        if self.fields is None:
            datamodule.setup()
            if not self.item_text_change:
                return datamodule.catalog.texts
            budgets = {**datamodule.settings.features.item_text, **self.item_text_change}
            return compose_item_texts(datamodule.dataset.products, budgets)
        products = datamodule.dataset.products
        unknown = [f for f in self.fields if f not in products.columns]
        if unknown:
            raise ValueError(f"model.fields names unknown product columns {unknown}; valid columns: "
                             f"{', '.join(products.columns)} (or null: the composed item text)")
        return [" ".join(parts) for parts in zip(*(products[f].fill_null("").to_list() for f in self.fields),
                                                 strict=True)]

    def select_item_text(self, datamodule: RetrievalDataModule, valid_texts: list[str], k: int,
                         score: Callable[[np.ndarray, np.ndarray], float]) -> list[TextChoice]:
        """Index the default item text and each of ``item_text_choices``, score each on the valid queries
        (``score(scores, indices)``, higher is better) and keep the best indexed (ties keep the earlier)."""
        changes = [{}, *self.item_text_choices]
        for change in changes[1:]:
            check_item_text({**datamodule.settings.features.item_text, **change})
        tried: list[TextChoice] = []
        best = 0
        for position, change in enumerate(changes):
            self.item_text_change = change
            self.index(datamodule)
            tried.append(TextChoice(text_choice_name(change), score(*self.retrieve(valid_texts, k))))
            if tried[position].score > tried[best].score:
                best = position
        if best != len(changes) - 1:
            self.item_text_change = changes[best]
            self.index(datamodule)
        return tried

    def retrieve(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices), both [n_queries, k]; a query with no matching term gets score-0 fillers."""
        import bm25s

        tokens = bm25s.tokenize(texts, stopwords=self.stopwords, show_progress=False)
        k = min(k, self.n_items)
        items, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return scores.astype(np.float32), items.astype(np.int64)

    def score_pairs(self, texts: list[str], query_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """BM25 scores of given (query, item) pairs: ``texts[query_rows[i]]`` against item ``item_rows[i]``."""
        import bm25s

        tokens = bm25s.tokenize(texts, stopwords=self.stopwords, show_progress=False, return_ids=False)
        out = np.zeros(len(query_rows), dtype=np.float32)
        order = np.argsort(query_rows, kind="stable")
        starts = np.flatnonzero(np.diff(query_rows[order], prepend=-1))
        for block in np.split(order, starts[1:]):
            query = tokens[query_rows[block[0]]]
            if query:  # a query of stop words alone matches nothing: every candidate scores 0
                out[block] = self.retriever.get_scores(query)[item_rows[block]]
        return out


def text_choice_name(change: Mapping[str, int]) -> str:
    """``default`` or the budgets changed, e.g. ``description=0``."""
    return " ".join(f"{column}={budget}" for column, budget in change.items()) or "default"
