"""Nearest-neighbour search over catalogue vectors with faiss (inner product), exact by default.

The index type is a faiss ``index_factory`` string from the run config: ``Flat`` (exact), ``IVF256,Flat``,
``HNSW32``, ``IVF256,PQ16``, ... Queries are searched in bounded batches so memory stays flat whatever the
number of queries; only the top-k per query is ever kept.

Above a catalogue size (``index.approximate_above``; null, the default, keeps every search exact) the runner and
the validation use ``index.approximate_factory`` instead (``chosen_factory``): at ESCI's 1.2M products an exact
search costs milliseconds per query, which is fine for a benchmark's few thousand test queries but not for
serving; ``benchmarks/scale.py`` reports an approximate index's recall@100 against Flat on the same vectors.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np


@dataclass
class SearchResult:
    scores: np.ndarray        # float32 [n_queries, k]
    indices: np.ndarray       # int64 [n_queries, k], catalogue rows (-1 where fewer than k exist)
    build_seconds: float
    search_seconds: float
    index_bytes: int
    factory: str

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.search_seconds / max(len(self.indices), 1)


def chosen_factory(index: Mapping[str, Any], n_items: int) -> str:
    """The faiss factory string for a catalogue of ``n_items`` under the config's ``index`` section."""
    threshold = index.get("approximate_above")
    if threshold is not None and n_items > int(threshold):
        return str(index.get("approximate_factory") or "HNSW32")
    return str(index.get("factory", "Flat"))


def build_index(vectors: np.ndarray, factory: str = "Flat", nprobe: int = 16, ef_search: int = 128,
                seed: int = 0) -> faiss.Index:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(f"faiss cannot build index '{factory}': {str(error).splitlines()[-1]}") from None
    if not index.is_trained:
        _train(index, vectors, seed)
    index.add(vectors)
    _set_search_depth(index, nprobe, ef_search)
    return index


def _train(index: faiss.Index, vectors: np.ndarray, seed: int) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.nlist > len(vectors) // 39:
        raise ValueError(f"an IVF index with {ivf.nlist} lists needs at least {39 * ivf.nlist} vectors to train, "
                         f"the catalogue has {len(vectors)}; use fewer lists or index.factory=Flat")
    if ivf is not None:
        ivf.cp.seed = seed
    index.train(vectors)


def _set_search_depth(index: faiss.Index, nprobe: int, ef_search: int) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = ef_search


def search(index: faiss.Index, queries: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    scores = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        stop = start + batch_size
        scores[start:stop], indices[start:stop] = index.search(queries[start:stop], k)
    return scores, indices


def index_and_search(items: np.ndarray, queries: np.ndarray, k: int, factory: str = "Flat", nprobe: int = 16,
                     ef_search: int = 128, seed: int = 0) -> SearchResult:
    started = time.perf_counter()
    index = build_index(items, factory, nprobe, ef_search, seed)
    built = time.perf_counter()
    scores, indices = search(index, queries, k)
    searched = time.perf_counter()
    return SearchResult(scores, indices, built - started, searched - built, serialized_bytes(index), factory)


def serialized_bytes(index: faiss.Index) -> int:
    """The index's size as faiss writes it, counted as the bytes stream by: ``serialize_index`` would hold two
    copies of the index in memory (1.2M x 128 floats: 1.1 GB at the run's peak, in every validation pass)."""
    written = [0]

    def count(chunk: bytes) -> None:
        written[0] += len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return written[0]
