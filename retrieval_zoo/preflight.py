"""Checks made once at the start of a benchmark invocation, before any data is prepared or any model trained,
(interrupts: retrieval_zoo/interrupts.py).

``check_run_settings(config, seeds)`` fails with one ``ConfigError`` line (the key, the value, the fix) on:

- ``eval.k`` that is not an integer at least the largest cut-off of the metrics evaluated (``recall@500`` on a
  top-5 list would silently report recall@5), and the same for ``validation.k`` and ``validation.metrics``;
- an ``index.factory`` string faiss cannot build (tried on a small dummy index), or an IVF index with more
  lists than the catalogue can train (when the catalogue size is given);
- seeds that are not a count >= 1 or a list of distinct non-negative integers.

"""

from __future__ import annotations

import re
from typing import Any

from retrieval_zoo.evaluation import DEFAULT_METRICS, check_metrics
from retrieval_zoo.models.registry import ConfigError


# -- settings ----------------------------------------------------------------------------------------------
def check_run_settings(config: dict[str, Any], seeds: int | list[int], metrics: list[str] | None = None,
                       catalogue_size: int | None = None) -> list[int]:
    """Check a resolved config (``load_config``) and the seeds before any training; returns the seed list.

    ``metrics``: the metrics the run evaluates (default: the runner's ``DEFAULT_METRICS``); ``catalogue_size``:
    the number of catalogue items, when known, to check that an IVF index can be trained on them.
    """
    seed_list = check_seeds(seeds)
    wanted = list(metrics) if metrics else list(DEFAULT_METRICS)
    _check_metric_names(wanted, "metrics")
    _check_k(config.get("eval", {}).get("k"), "eval.k", wanted)
    _check_validation(config.get("validation", {}))
    _check_index(config.get("index", {}), config.get("model", {}), catalogue_size)
    _check_torch_threads((config.get("runtime") or {}).get("torch_threads"))
    return seed_list


def _check_torch_threads(threads: Any) -> None:
    if threads is not None and (not _is_int(threads) or threads < 1):
        raise ConfigError(f"runtime.torch_threads={threads!r}: give a thread count >= 1 (e.g. --set "
                          "runtime.torch_threads=1) or null for torch's default")


def check_seeds(seeds: Any) -> list[int]:
    """A count n >= 1 (seeds 0..n-1) or a list of distinct non-negative integers -> the seed list."""
    if _is_int(seeds):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds}: the number of seeds must be at least 1, e.g. --seeds 1 (seed 0) "
                              "or --seeds 3 (seeds 0, 1, 2)")
        return list(range(seeds))
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"seeds={seeds!r}: give a count >= 1 (e.g. 3 for seeds 0, 1, 2) or a non-empty list of "
                          "distinct non-negative integers (e.g. [0, 4])")
    bad = [s for s in seeds if not _is_int(s) or s < 0]
    if bad:
        raise ConfigError(f"seeds={list(seeds)!r}: {bad[0]!r} is not a non-negative integer; seeds are integers "
                          ">= 0, e.g. [0, 1, 2]")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError(f"seeds={list(seeds)!r}: seed {repeated[0]} is listed twice (a seed's run would "
                          f"overwrite its own result); list each seed once, e.g. {sorted(set(seeds))}")
    return [int(s) for s in seeds]


def metric_cutoff(name: str) -> int | None:
    """The rank cut-off a metric name carries (``recall@500`` -> 500), None for whole-list metrics (``ndcg``)."""
    found = re.search(r"@(\d+)", name)
    return int(found.group(1)) if found else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metric_names(names: list[str], key: str) -> None:
    try:
        check_metrics(names)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def _check_k(k: Any, key: str, metrics: list[str]) -> None:
    cutoffs = {m: metric_cutoff(m) for m in metrics if metric_cutoff(m) is not None}
    largest = max(cutoffs.values(), default=1)
    deepest = max(cutoffs, key=cutoffs.get) if cutoffs else None
    if not _is_int(k):
        raise ConfigError(f"{key}={k!r}: {key} must be an integer (items retrieved per query), e.g. "
                          f"--set {key}={largest}")
    if k < largest:
        what = f"the largest metric cut-off ({deepest})" if deepest else "1"
        raise ConfigError(f"{key}={k} is below {what}: the metrics would be computed on a {k}-item list "
                          f"shorter than they name; set {key} to at least {largest}, e.g. --set {key}={largest}")


def _check_validation(section: dict[str, Any]) -> None:
    from retrieval_zoo.validation import ValidationSettings

    try:
        settings = ValidationSettings(**section)
    except TypeError as error:
        raise ConfigError(f"validation config: {error}") from None
    except ValueError as error:
        raise ConfigError(f"validation config: {error}") from None
    if not settings.enabled:
        return
    _check_k(settings.k, "validation.k", list(settings.metrics))
    if settings.max_queries is not None and (not _is_int(settings.max_queries) or settings.max_queries < 1):
        raise ConfigError(f"validation.max_queries={settings.max_queries!r} must be an integer >= 1 or null (all "
                          "valid units), e.g. --set validation.max_queries=2000")


DUMMY_DIM = 768  # divisible by every power of two up to 256 and by 3: a syntax check of the factory string


def _check_index(index: dict[str, Any], model: dict[str, Any], catalogue_size: int | None) -> None:
    for setting in ("nprobe", "ef_search"):
        value = index.get(setting, 1)
        if not _is_int(value) or value < 1:
            raise ConfigError(f"index.{setting}={value!r} must be an integer >= 1, e.g. --set index.{setting}=16")
    _check_factory(index.get("factory", "Flat"), "index.factory", model, catalogue_size)
    threshold = index.get("approximate_above")
    if threshold is None:
        return
    if not _is_int(threshold) or threshold < 1:
        raise ConfigError(f"index.approximate_above={threshold!r} must be a catalogue size >= 1 or null (always "
                          "index.factory), e.g. --set index.approximate_above=1000000")
    if catalogue_size is None or catalogue_size > threshold:
        _check_factory(index.get("approximate_factory") or "HNSW32", "index.approximate_factory", model,
                       catalogue_size)


def _check_factory(factory: Any, key: str, model: dict[str, Any], catalogue_size: int | None) -> None:
    import faiss
    import numpy as np

    if not isinstance(factory, str) or not factory.strip():
        raise ConfigError(f"{key}={factory!r} must be a faiss index_factory string, e.g. "
                          f"--set {key}=Flat (exact) or {key}=HNSW32")
    dim = model.get("dim") if _is_int(model.get("dim")) and model.get("dim") > 0 else DUMMY_DIM
    try:
        built = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else "not understood"
        raise ConfigError(f"{key}={factory!r}: faiss cannot build it on {dim}-d vectors ({reason}); use a "
                          "faiss index_factory string such as Flat (exact), HNSW32, IVF256,Flat or IVF256,PQ16 "
                          "(PQ<m>: m must divide the vector size)") from None
    if built.is_trained:  # no training needed: add and search a few vectors, as the runner will
        vectors = np.random.default_rng(0).standard_normal((8, dim)).astype(np.float32)
        built.add(vectors)
        built.search(vectors[:2], 2)
    ivf = faiss.try_extract_index_ivf(built)
    if ivf is not None and catalogue_size is not None and ivf.nlist * 39 > catalogue_size:
        raise ConfigError(f"{key}={factory!r}: an IVF index with {ivf.nlist} lists needs at least "
                          f"{39 * ivf.nlist} vectors to train, the catalogue has {catalogue_size}; use fewer "
                          f"lists (e.g. IVF{max(1, catalogue_size // 39)},Flat) or --set {key}=Flat")
