"""Mined hard negatives: for each training query, catalogue items that look relevant but are not positives.

In-batch and uniformly sampled negatives are mostly easy (a phone charger against a dumbbell); a retriever
also has to rank the positive above the items a lexical or a pretrained model would confuse with it. DPR
(Karpukhin et al., 2020) adds one BM25 negative per question, ANCE / Tevatron re-mine with the model itself,
sentence-transformers' ``mine_hard_negatives`` mines with a frozen embedder. Here the lists are mined once,
before training, from up to three sources (``data.hard_negatives.sources``):

- ``judged``: the query's judged Complement / Irrelevant items (label data only: a behaviour dataset's
  judgments are its evaluation ground truth, not training signal);
- ``bm25``: the top ``depth`` catalogue items for the query text by BM25 (bm25s, the BM25 baseline's settings)
  over the composed item text (features.py); items without any matching term (score 0) are left out;
- ``minilm``: the top ``depth`` items by cosine of frozen all-MiniLM-L6-v2 embeddings (text.sentence_features,
  cached) through a faiss IndexFlatIP.

Only TRAIN units are mined (valid and test queries never are), once per distinct query (many searches share
one). Positives are removed from every list: items judged E or S for the query (label data) or clicked or
ordered in any train unit with the same query (behaviour data), i.e. the stage items at level >= 2 of the
query's train units (stages.py). A source's lists are cached on disk under
``cache_dir()/hard_negatives/`` keyed by a hash of (source, depth, its settings, the item texts, the train
query texts, the excluded pairs), so a changed dataset never reuses stale lists; ``judged`` lists are a join,
cheaper than a cache read, and are not cached. The per-query list is the union of the sources in the order
given (duplicates kept once, at their first place).

False negatives (``relative_margin``): a retrieved candidate that is not judged may still be relevant, because
judgments cover a pool of items, not the catalogue. On Icecat 83% of the BM25 candidates are unjudged, and for
"tv" they are TVs, for "dvd player" DVD players: as negatives they teach the model to push relevant items down.
As in sentence-transformers' ``mine_hard_negatives(relative_margin=...)`` (NV-Retriever's TopK-PercPos,
Moreira et al. 2024: 0.05 was its best), a retrieved candidate is kept only if its frozen MiniLM cosine to
the query is at least ``relative_margin`` of the positives' score magnitude below the positives' score. The
lists here are per query, not per (query, positive) pair, so the positives' score is the mean cosine of the
query's positives. Judged C/I items are human-checked negatives and always stay. Measured on Icecat's judged
BM25 top-50 items (each E/S item scored against the query's other positives), 0.05 keeps 80% of the I items
and 27% of the E items.

At batch time (datamodule.py) each example samples ``per_example`` items of its unit's list (-1 = padding
when the list is shorter), fresh each batch.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from retrieval_zoo.data import text
from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.features import QueryUnits
from retrieval_zoo.data.registry import cache_dir
from retrieval_zoo.data.stages import StageLists
from retrieval_zoo.quiet import memory_text

SOURCES = ("judged", "bm25", "minilm")
CACHE_VERSION = 1  # bump when the mining rule changes, so old cache files are not reused
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "stopwords": "en"}  # those of the BM25 baseline (models/bm25.py)
POSITIVE_LEVEL = 2  # stages.py: clicked/ordered (behaviour) or S/E (labels)
JUDGED_LEVEL = 1  # stages.py: C/I on label data
PAIR_CHUNK = 65_536  # (query, item) pairs scored per step by the false-negative filter


@dataclass
class HardNegativeSettings:
    """The ``data.hard_negatives`` section (see the module docstring); ``per_example: 0`` turns mining off."""

    sources: list[str] = field(default_factory=lambda: ["judged", "bm25"])
    depth: int = 50
    per_example: int = 4
    label_data_only: bool = True
    relative_margin: float | None = 0.05  # null: keep every retrieved candidate (no false-negative filter)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise DatasetError(f"data.hard_negatives.sources has unknown sources {unknown}; "
                               f"valid sources: {', '.join(SOURCES)}")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise DatasetError(f"data.hard_negatives.relative_margin must be in [0, 1) or null (no filter), "
                               f"got {self.relative_margin}")
        if self.depth < 1 or self.per_example < 0:
            raise DatasetError(f"data.hard_negatives needs depth >= 1 and per_example >= 0 (0 = off), "
                               f"got depth {self.depth}, per_example {self.per_example}")

    @property
    def enabled(self) -> bool:
        return self.per_example > 0 and len(self.sources) > 0

    @classmethod
    def of(cls, section: HardNegativeSettings | Mapping | None) -> HardNegativeSettings:
        """From a config mapping; an unknown key is a one-line error naming the valid ones."""
        if section is None or isinstance(section, HardNegativeSettings):
            return section or cls()
        valid = ("sources", "depth", "per_example", "label_data_only", "relative_margin")
        unknown = [key for key in section if key not in valid]
        if unknown:
            raise DatasetError(f"data.hard_negatives has unknown keys {unknown}; valid keys: {', '.join(valid)}")
        return cls(**section)


@dataclass
class MinedLists:
    """Per distinct train query q, items ``items[offsets[q]:offsets[q+1]]``; ``unit_query[u]`` is unit u's
    query row (-1 for valid/test units, which are never mined)."""

    offsets: np.ndarray
    items: np.ndarray
    unit_query: np.ndarray
    seconds: float = 0.0
    likely_false_negatives: int = 0  # retrieved candidates the relative-margin filter left out

    def summary(self) -> dict[str, float | int]:
        """What mining made, as a run's costs (meta.json) keep it: the line it prints, not lost with the log."""
        return {"mined_queries": len(self.offsets) - 1, "mined_mean_length": round(self.mean_length, 2),
                "mined_likely_false_negatives": self.likely_false_negatives,
                "mining_seconds": round(self.seconds, 2)}

    def of(self, unit: int) -> np.ndarray:
        query = self.unit_query[unit]
        if query < 0:
            return self.items[:0]
        return self.items[self.offsets[query] : self.offsets[query + 1]]

    @property
    def mean_length(self) -> float:
        return float(np.diff(self.offsets).mean()) if len(self.offsets) > 1 else 0.0


# -- mining ----------------------------------------------------------------------------------------------
def mine_hard_negatives(item_texts: list[str], units: QueryUnits, stages: StageLists,
                        settings: HardNegativeSettings, label_data: bool, verbose: bool = True) -> MinedLists:
    """The mined lists of every train unit's query (see the module docstring)."""
    started = time.perf_counter()
    unit_query, query_texts = train_queries(units)
    excluded = positive_keys(stages, unit_query, len(item_texts))
    per_source, used = [], [s for s in settings.sources if label_data or s != "judged"]
    for source in used:
        if source == "judged":
            per_source.append(_judged(stages, unit_query, len(item_texts)))
        else:
            per_source.append(_cached_source(source, item_texts, query_texts, excluded, settings.depth))
    filtered = settings.relative_margin is not None and any(source != "judged" for source in used)
    dropped = 0
    if filtered:
        per_source, dropped = _likely_false_negatives_removed(per_source, used, excluded, item_texts, query_texts,
                                                              settings.relative_margin)
    keys = _without(_union(per_source, len(item_texts)), excluded)
    rows, items = np.divmod(keys, len(item_texts))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(query_texts)))]).astype(np.int64)
    mined = MinedLists(offsets, items.astype(np.int64), unit_query, time.perf_counter() - started, dropped)
    if verbose:
        margin = (f", {dropped:,} retrieved candidates within {settings.relative_margin:g} of the positives' "
                  f"score left out as likely false negatives" if filtered else "")
        print(f"hard negatives ({'+'.join(used) or 'no source'}, depth {settings.depth}): {len(query_texts):,} train "
              f"queries mined in {mined.seconds:.1f} s, mean list length {mined.mean_length:.1f}{margin}  "
              f"{memory_text()}", flush=True)
    return mined


def train_queries(units: QueryUnits) -> tuple[np.ndarray, list[str]]:
    """Each unit's row among the distinct train queries (-1 outside train), and those queries' texts."""
    rows: dict[str, int] = {}
    texts: list[str] = []
    unit_query = np.full(len(units.unit_ids), -1, dtype=np.int64)
    for unit in units.indices_of_split("train"):
        query_id = units.query_ids[unit]
        if query_id not in rows:
            rows[query_id] = len(texts)
            texts.append(units.texts[unit])
        unit_query[unit] = rows[query_id]
    return unit_query, texts


def _stage_keys(stages: StageLists, unit_query: np.ndarray, n_items: int, keep) -> np.ndarray:
    """Sorted distinct ``query_row * n_items + item`` of the train units' stage items whose level passes ``keep``."""
    units = np.repeat(np.arange(len(stages.offsets) - 1), np.diff(stages.offsets))
    rows = unit_query[units]
    chosen = keep(stages.levels) & (rows >= 0)
    return np.unique(rows[chosen] * n_items + stages.items[chosen])


def positive_keys(stages: StageLists, unit_query: np.ndarray, n_items: int) -> np.ndarray:
    """The (query, item) pairs that are positives of some train unit of the query: never negatives."""
    return _stage_keys(stages, unit_query, n_items, lambda levels: levels >= POSITIVE_LEVEL)


def _judged(stages: StageLists, unit_query: np.ndarray, n_items: int) -> np.ndarray:
    return _stage_keys(stages, unit_query, n_items, lambda levels: levels == JUDGED_LEVEL)


def _union(per_source: list[np.ndarray], n_items: int) -> np.ndarray:
    """Pair keys of all sources, each kept once at its first place, grouped by query (sources in order within)."""
    if not per_source:
        return np.zeros(0, dtype=np.int64)
    keys = np.concatenate(per_source)
    _, first = np.unique(keys, return_index=True)
    keys = keys[np.sort(first)]
    return keys[np.argsort(keys // n_items, kind="stable")]


def _without(keys: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    return keys[~np.isin(keys, excluded)]


def _likely_false_negatives_removed(per_source: list[np.ndarray], sources: list[str], positives: np.ndarray,
                                    item_texts: list[str], query_texts: list[str], margin: float
                                    ) -> tuple[list[np.ndarray], int]:
    """Each retrieved source's pair keys without those scoring too close to the query's positives (judged lists
    untouched), and how many were removed."""
    retrieved = [keys for keys, source in zip(per_source, sources, strict=True) if source != "judged"]
    kept = _below_positives(np.concatenate(retrieved), positives, item_texts, query_texts, margin)
    filtered = [keys if source == "judged" else keys[np.isin(keys, kept)]
                for keys, source in zip(per_source, sources, strict=True)]
    return filtered, sum(map(len, per_source)) - sum(map(len, filtered))


def _below_positives(keys: np.ndarray, positives: np.ndarray, item_texts: list[str], query_texts: list[str],
                     margin: float) -> np.ndarray:
    """The candidate pair ``keys`` whose query-item score is at least ``margin`` of the query's positives' mean
    score magnitude below that mean (sentence-transformers' relative margin); a query without positives keeps
    all its candidates."""
    n_items = len(item_texts)
    scores = pair_scores(np.concatenate([keys, positives]), item_texts, query_texts)
    candidate_scores, positive_scores = scores[: len(keys)], scores[len(keys):]
    positive_rows = positives // n_items
    totals = np.bincount(positive_rows, weights=positive_scores, minlength=len(query_texts))
    counts = np.bincount(positive_rows, minlength=len(query_texts))
    mean = np.divide(totals, counts, out=np.zeros(len(query_texts)), where=counts > 0)
    ceiling = np.where(counts > 0, mean - margin * np.abs(mean), np.inf)
    return keys[candidate_scores <= ceiling[keys // n_items]]


def pair_scores(keys: np.ndarray, item_texts: list[str], query_texts: list[str]) -> np.ndarray:
    """Frozen all-MiniLM-L6-v2 cosine of each (query row, item) pair key (the vectors cached on disk)."""
    # always the packaged MiniLM, as the minilm source: the filter is part of the data, not of the model trained
    items = text.sentence_features(item_texts, encoder=text.DEFAULT_ENCODER)
    queries = text.sentence_features(query_texts, encoder=text.DEFAULT_ENCODER)
    scores = np.empty(len(keys), dtype=np.float32)
    for start in range(0, len(keys), PAIR_CHUNK):  # chunks: 1.5M ESCI pairs at once would gather 2.3 GB of vectors
        rows, columns = np.divmod(keys[start : start + PAIR_CHUNK], len(item_texts))
        scores[start : start + PAIR_CHUNK] = np.einsum("ij,ij->i", np.asarray(queries[rows], np.float32),
                                                       np.asarray(items[columns], np.float32))
    return scores


# -- the retrieval sources, cached -------------------------------------------------------------------------
def _cached_source(source: str, item_texts: list[str], query_texts: list[str], excluded: np.ndarray,
                   depth: int) -> np.ndarray:
    """Pair keys of ``source``'s top-``depth`` items per query, positives removed; from disk when mined before."""
    path = cache_dir() / "hard_negatives" / f"{source}-{cache_key(source, depth, item_texts, query_texts, excluded)}.npy"
    if path.exists():
        return np.load(path)
    top = _bm25_top(item_texts, query_texts, depth) if source == "bm25" else _minilm_top(item_texts, query_texts,
                                                                                         depth)
    rows = np.repeat(np.arange(len(query_texts), dtype=np.int64), top.shape[1])
    keys = rows * len(item_texts) + top.reshape(-1)
    keys = _without(keys[top.reshape(-1) >= 0], excluded)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # process-private: DDP ranks may mine the same lists
    np.save(tmp, keys)
    tmp.rename(path)
    return keys


def cache_key(source: str, depth: int, item_texts: list[str], query_texts: list[str], excluded: np.ndarray) -> str:
    """Hash of everything a source's lists depend on: a changed text or positive gives a new key."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{source}|{depth}|{sorted(BM25_PARAMS.items())}|"
                            f"{text.PRETRAINED_NAME}".encode())
    for part in (item_texts, query_texts):
        digest.update(f"|{len(part)}|".encode())
        for value in part:
            digest.update(value.encode("utf-8", "replace") + b"\x00")
    digest.update(np.ascontiguousarray(excluded, dtype=np.int64).tobytes())
    return digest.hexdigest()[:24]


def _bm25_top(item_texts: list[str], query_texts: list[str], depth: int) -> np.ndarray:
    """int64 [n_queries, depth] BM25 top items; -1 where the item matches no query term (score 0)."""
    import bm25s

    stopwords = BM25_PARAMS["stopwords"]
    retriever = bm25s.BM25(k1=BM25_PARAMS["k1"], b=BM25_PARAMS["b"])
    retriever.index(bm25s.tokenize(item_texts, stopwords=stopwords, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(query_texts, stopwords=stopwords, show_progress=False)
    items, scores = retriever.retrieve(tokens, k=min(depth, len(item_texts)), show_progress=False, n_threads=1)
    return np.where(scores > 0, items, -1).astype(np.int64)


def _minilm_top(item_texts: list[str], query_texts: list[str], depth: int) -> np.ndarray:
    """int64 [n_queries, depth] top items by frozen all-MiniLM-L6-v2 cosine (exact inner-product search)."""
    import faiss

    # the source is named for MiniLM and its cache key says so: always the packaged one, whatever model.encoder is
    items = text.sentence_features(item_texts, encoder=text.DEFAULT_ENCODER)
    queries = text.sentence_features(query_texts, encoder=text.DEFAULT_ENCODER)
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    _, top = index.search(queries, min(depth, len(item_texts)))
    return top.astype(np.int64)  # faiss pads with -1 only when the catalogue is smaller than depth
