"""Nearest-neighbour search over catalogue vectors with faiss (inner product), exact by default.

The index type is a faiss ``index_factory`` string from the run config: ``Flat`` (exact), ``IVF256,Flat``,
``HNSW32``, ``IVF256,PQ16``, ... Queries are searched in bounded batches so memory stays flat whatever the
number of queries; only the top-k per query is ever kept. ``Flat`` builds no index: faiss's brute-force kNN reads
the catalogue array in place (``exact_search``), the same results without a second copy of the catalogue.

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

EXACT = "Flat"  # the factory string of exact search


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
    k = min(k, index.ntotal)
    return _in_query_batches(lambda batch: index.search(batch, k), queries, k, batch_size)


def exact_search(items: np.ndarray, queries: np.ndarray, k: int, batch_size: int = 4096
                 ) -> tuple[np.ndarray, np.ndarray]:
    """What a ``Flat`` index returns, bit for bit (faiss's ``knn_inner_product`` on the same query batches),
    read from ``items`` itself through ``faiss.knn``: no index holds a second copy of the catalogue (1.8 GB at
    ESCI's 1.2M items and MiniLM's 384-d, beside the array the runner keeps for re-ranking)."""
    items = np.ascontiguousarray(items, dtype=np.float32)
    k = min(k, len(items))
    return _in_query_batches(lambda batch: faiss.knn(batch, items, k, faiss.METRIC_INNER_PRODUCT), queries, k,
                             batch_size)


def _in_query_batches(search_batch, queries: np.ndarray, k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        stop = start + batch_size
        scores[start:stop], indices[start:stop] = search_batch(queries[start:stop])
    return scores, indices


def index_and_search(items: np.ndarray, queries: np.ndarray, k: int, factory: str = "Flat", nprobe: int = 16,
                     ef_search: int = 128, seed: int = 0) -> SearchResult:
    """The top ``k`` catalogue rows per query; ``Flat`` searches ``items`` in place (``exact_search``), any other
    factory builds its index first."""
    if factory == EXACT:
        started = time.perf_counter()
        scores, indices = exact_search(items, queries, k)
        return SearchResult(scores, indices, 0.0, time.perf_counter() - started, flat_index_bytes(*items.shape),
                            factory)
    started = time.perf_counter()
    index = build_index(items, factory, nprobe, ef_search, seed)
    built = time.perf_counter()
    scores, indices = search(index, queries, k)
    searched = time.perf_counter()
    return SearchResult(scores, indices, built - started, searched - built, serialized_bytes(index), factory)


def flat_index_bytes(n_items: int, dim: int) -> int:
    """What faiss would write for a ``Flat`` index of such a catalogue, as ``serialized_bytes`` counts a built
    one: the empty index's header and the float32 rows."""
    return serialized_bytes(faiss.IndexFlatIP(dim)) + 4 * n_items * dim


def serialized_bytes(index: faiss.Index) -> int:
    """The index's size as faiss writes it, counted as the bytes stream by: ``serialize_index`` would hold two
    copies of the index in memory (1.2M x 128 floats: 1.1 GB at the run's peak, in every validation pass)."""
    written = [0]

    def count(chunk: bytes) -> None:
        written[0] += len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return written[0]
