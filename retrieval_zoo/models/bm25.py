"""BM25 baseline (Robertson & Zaragoza, 2009) through bm25s (Lù, 2024): lexical retrieval, no training.

It is a retriever rather than a two-tower model: the runner calls ``retrieve`` instead of encoding vectors
for faiss. Items are indexed by the composed item text every other model reads (``data.features.item_text``:
title, brand, category leaf and description with per-field word budgets, see retrieval_zoo/data/features.py),
so the lexical baseline and the learned models see the same words; k1 = 1.5, b = 0.75 (bm25s's Lucene
defaults), English stop words removed, no stemming (config keys).

``fields`` (a list of product columns) instead indexes those columns whole, joined by spaces: the index before
the composed item text existed, kept for comparisons. ``fields: null`` (the default) uses the item text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from retrieval_zoo.data.datamodule import RetrievalDataModule


@dataclass
class BM25Config:
    """The ``model:`` section of configs/bm25.yaml (each key documented there)."""

    k1: float = 1.5
    b: float = 0.75
    stopwords: str | None = "en"
    fields: list[str] | None = None


class BM25Retriever:
    required_fields: set[str] = set()
    optional_fields: set[str] = set()
    trainable = False

    def __init__(self, config: BM25Config | None = None):
        config = config or BM25Config()
        self.k1, self.b, self.stopwords = config.k1, config.b, config.stopwords
        self.fields = tuple(config.fields) if config.fields else None
        self.index_seconds = 0.0
        self.n_items = 0

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
            return datamodule.catalog.texts
        products = datamodule.dataset.products
        unknown = [f for f in self.fields if f not in products.columns]
        if unknown:
            raise ValueError(f"model.fields names unknown product columns {unknown}; valid columns: "
                             f"{', '.join(products.columns)} (or null: the composed item text)")
        return [" ".join(parts) for parts in zip(*(products[f].fill_null("").to_list() for f in self.fields),
                                                 strict=True)]

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
