"""The benchmark runner: train -> encode the catalogue -> faiss top-K -> ranx metrics -> results + leaderboard.

``run_benchmark("mgdspr", "simshop", seeds=3)`` (or ``python -m retrieval_zoo bench --model mgdspr``) trains
with Lightning's Trainer (accelerator "auto"), encodes the catalogue in bounded batches, searches every test
unit's top K with faiss, evaluates with ranx, writes the run under ``results/runs/<dataset>/<model>/<variant>/
seed<k>/`` (metrics, ranked run, per-query metrics, config, versions, timings), updates
``results/leaderboard.{csv,md}`` and prints the metrics table. Datasets whose meta names ``cv_folds`` (Icecat)
are run as query-level k-fold cross-validation: one model per fold, the folds' test rankings pooled.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch

from retrieval_zoo import store, tracking
from retrieval_zoo.data import text
from retrieval_zoo.data.datamodule import DataSettings, RetrievalDataModule
from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.data.features import (
    FeatureSettings,
    build_catalog,
    build_units,
    fields_to_build,
    without_unread_text,
)
from retrieval_zoo.data.fingerprint import dataset_key, folder_fingerprint, slug
from retrieval_zoo.data.registry import cache_dir, load_dataset, parse_dataset_spec
from retrieval_zoo.evaluation import (
    DEFAULT_METRICS,
    build_targets,
    evaluate_run,
    rerank_metrics,
    rerank_run,
    run_from_topk,
)
from retrieval_zoo.index import chosen_factory, index_and_search
from retrieval_zoo.interrupts import commit_guard
from retrieval_zoo.models.base import RetrievalModule
from retrieval_zoo.models.bm25 import text_choice_name
from retrieval_zoo.models.components import uses_encoder
from retrieval_zoo.models.registry import (
    ConfigError,
    build_model,
    encoder_of,
    load_config,
    model_entry,
    text_columns_read,
)
from retrieval_zoo.preflight import check_run_settings
from retrieval_zoo.quiet import Quiet, memory_text, on_terminal, progress_callbacks, quiet, show_bars
from retrieval_zoo.reports import RECIPE, flat_row, write_board
from retrieval_zoo.run_folder import protocol_text, selected_state, write_model_state, write_run_folder
from retrieval_zoo.tracking import TRACKING_KEYS, LogEveryEpoch
from retrieval_zoo.validation import (
    RetrievalValidation,
    Selection,
    ValidationSettings,
    ValidScorer,
    select_best,
    selection_callbacks,
    valid_sample,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


@dataclass
class RunResult:
    dataset: str
    model: str
    variant: str
    seed: int
    metrics: dict[str, float]
    costs: dict[str, Any]
    run_dir: Path
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    significance: dict[str, Any] = field(default_factory=dict)
    dataset_spec: str = ""
    config_hash: str = ""
    dataset_fingerprint: str = ""
    encoder: str | None = None  # model.encoder as configured, for rows whose model reads one (else None)

    def row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "variant": self.variant, "seed": self.seed,
                "baseline": model_entry(self.model).baseline, **self.metrics, **self.costs,
                **self.significance, "dataset_spec": self.dataset_spec,
                # relative to the results folder, so a board reads the same wherever the folder lives
                "run_dir": f"runs/{self.dataset}/{self.model}/{self.variant}/seed{self.seed}",
                "recipe": RECIPE, "config_hash": self.config_hash,
                "dataset_fingerprint": self.dataset_fingerprint[:16], "encoder": self.encoder}

    # -- reuse and analysis (retrieval_zoo/serving.py, retrieval_zoo/analysis.py) ------------------------------
    def load_model(self, dataset: str | ProductSearchDataset | None = None, **options: Any):
        """The run's selected model, reloaded from its folder (``retrieval_zoo.serving.load_model``)."""
        from retrieval_zoo.serving import load_model

        return load_model(self.run_dir, dataset, **options)

    def per_query(self, dataset: str | ProductSearchDataset | None = None) -> pl.DataFrame:
        """One row per evaluated unit: its metrics, query text, group and label counts
        (``retrieval_zoo.analysis.per_query``)."""
        from retrieval_zoo.analysis import per_query

        return per_query(self, dataset)

    def ranked(self, query_or_unit_id: str, k: int = 10,
               dataset: str | ProductSearchDataset | None = None) -> pl.DataFrame:
        """The run's top ``k`` for a unit id, query id or query text, with titles and labels
        (``retrieval_zoo.analysis.ranked``)."""
        from retrieval_zoo.analysis import ranked

        return ranked(self, query_or_unit_id, k, dataset)


@dataclass(frozen=True)
class DatasetIdentity:
    """How the board names a dataset (``key``) and what its content hashes to (``fingerprint``)."""

    key: str
    fingerprint: str
    spec: str  # as given, with a ``path=`` made absolute
    label_data: bool = True  # judged labels, no behaviour log: what hard-negative mining acts on by default


@dataclass
class SearchOutput:
    """What one trained model produced on one test split (``rerank``: its scores of each query's judged
    candidates, on datasets whose protocols include re-ranking)."""

    run: pl.DataFrame
    units: pl.DataFrame
    costs: dict[str, Any]
    rerank: pl.DataFrame | None = None
    valid_curve: pl.DataFrame | None = None
    state: dict[str, torch.Tensor] | None = None  # the selected weights, on the CPU (None: BM25, no weights)
    encoder: str | None = None  # the model.encoder the model read (None: it reads none)
    valid_queries: pl.DataFrame | None = None  # each check's per-unit valid values (RetrievalValidation)




def run_benchmark(model: str, dataset: str | ProductSearchDataset = "simshop", seeds: int | list[int] = 1,
                  variant: str | None = None, overrides: list[str] | dict | None = None,
                  results_dir: str | Path = "results", wandb: str | None = None, progress: bool = True,
                  update_leaderboard: bool = True, config_file: str | Path | None = None,
                  metrics: list[str] | None = None, print_table: bool = True) -> list[RunResult]:
    """Train and evaluate ``model`` (a registered name) on ``dataset`` for each seed; see the module docstring.

    ``seeds`` is a count (seeds 0..n-1) or an explicit list. ``wandb``: "online", "offline" or "disabled"
    (default: online with WANDB_API_KEY set, else offline). Returns one RunResult per seed.
    """
    config = load_config(model, variant, overrides, config_file)
    seed_list = check_run_settings(config, seeds, metrics)
    spec = dataset if isinstance(dataset, str) else dataset.name
    started = time.perf_counter()
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    load_seconds = time.perf_counter() - started
    check_run_settings(config, seed_list, metrics, catalogue_size=data.products.height)
    identity = dataset_identity(spec, data)
    selection = validation_settings(config)
    data = with_valid_split(data, selection.valid_fraction if selection.enabled else 0.0)
    data = _release_unread_text(data, config, progress)
    results_dir = Path(results_dir)
    for line in store.recover(results_dir, write_board):
        print(f"results: {line}")
    staging = store.new_staging(results_dir)
    try:
        with torch_threads((config.get("runtime") or {}).get("torch_threads")):
            results = [run_once(config, data, identity, seed, results_dir, staging, wandb, progress, metrics,
                                load_seconds) for seed in seed_list]
        with commit_guard():  # an interrupt waits until the seeds and their board rows are in, whole
            store.commit(results_dir, staging, [r.run_dir for r in results],
                         [flat_row(r) for r in results] if update_leaderboard else [],
                         {identity.key: protocol_text(data)}, write_board)
    except BaseException:
        store.abandon(results_dir, staging)  # nothing of this invocation reaches the board
        raise
    if update_leaderboard:
        _read_back_tests(results, results_dir)
    if print_table:
        from retrieval_zoo.reports import format_results

        print(format_results(results))
    return results


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count ``count`` while the runs train and evaluate (None: left as it is), restored
    after, so a notebook's own setting survives. Training sums in a thread-dependent order: a row reproduces bit
    for bit at the count it was made with (its meta.json records it), and can move in the last bits at another."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_sentence_features(model: str, dataset: str | ProductSearchDataset, variant: str | None = None,
                            overrides: list[str] | dict | None = None) -> str:
    """Encode and cache the frozen sentence features a run of ``model`` on ``dataset`` reads, without training.

    The encoding is the slow step of a ``pretrained`` variant at scale (1.2M ESCI items: hours on 2 CPU cores);
    done once here (or on a GPU machine writing the same cache folder), every later run, variant and seed reads
    it (``text.sentence_features``: keyed by encoder and texts, resumable). Returns one line per table cached."""
    config = load_config(model, variant, overrides)
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    module = build_model(config)
    name = f"{config['name']}/{config['variant']}"
    fields = fields_to_build(data, module.required_fields, module.optional_fields, config["name"])
    wanted = fields & {"item_sentence", "query_sentence"}
    if not wanted:
        return f"{name} reads no frozen sentence features: nothing to cache"
    settings = data_settings(config["data"], encoder_of(config)).features
    started = time.perf_counter()
    catalog = build_catalog(data, wanted, settings)
    units = build_units(data, wanted, settings, catalog)
    lines = [f"{table} sentence features {tuple(source.tensors[key].shape)} ({settings.encoder}) cached for {name}"
             for table, source, key in (("item", catalog, "item_sentence"), ("query", units, "query_sentence"))
             if key in wanted]
    return "\n".join([*lines, f"in {time.perf_counter() - started:.1f} s"])


def _release_unread_text(data: ProductSearchDataset, config: dict[str, Any], progress: bool) -> ProductSearchDataset:
    """The dataset without the long product text this run never reads (same results, less memory held)."""
    read = text_columns_read(config, data_settings(config["data"]).features.item_text)
    data, released = without_unread_text(data, read)
    if released and progress:
        print(f"product text not read by this run, released from memory: {', '.join(released)}",
              file=sys.stderr, flush=True)
    return data


def _read_back_tests(results: list[RunResult], results_dir: Path) -> None:
    """Each result's test against the best baseline, as the board computed it when the rows went in."""
    from retrieval_zoo.reports import read_leaderboard
    from retrieval_zoo.significance import TEST_COLUMNS

    board = read_leaderboard(results_dir)
    for result in results:
        row = board.filter((pl.col("dataset") == result.dataset) & (pl.col("model") == result.model)
                           & (pl.col("variant") == result.variant) & (pl.col("seed") == result.seed))
        result.significance = {c: row[c][0] for c in TEST_COLUMNS if c in row.columns and row[c][0] is not None}


def dataset_identity(spec: str, data: ProductSearchDataset) -> DatasetIdentity:
    """A folder-backed dataset (``path=``) is named and hashed by its files, so two folders never share a board
    section; a registered one by its spec, hashed with its generator / preparation version and sizes."""
    _, params = parse_dataset_spec(spec)
    if "path" in params:
        fingerprint = folder_fingerprint(params["path"], cache_dir() / "fingerprints.json")
        resolved = {**params, "path": str(Path(params["path"]).expanduser().resolve())}
        absolute = spec.partition(":")[0] + ":" + ",".join(f"{k}={v}" for k, v in resolved.items())
        return DatasetIdentity(dataset_key(spec, params, fingerprint), fingerprint, absolute, not data.has_behaviour)
    versions = {k: v for k, v in sorted(data.meta.items()) if "version" in k}
    payload = json.dumps({"spec": spec, "versions": versions, "sizes": data.describe()}, sort_keys=True,
                         default=str)
    return DatasetIdentity(slug(spec), hashlib.sha256(payload.encode()).hexdigest(), spec, not data.has_behaviour)


def config_hash(config: dict[str, Any], fingerprint: str, label_data: bool = True) -> str:
    """What a board row was made with: the resolved config, the training recipe and the dataset's content.
    ``leaderboard --resume`` reruns a row whose hash differs from the plan's. ``label_data``: whether the dataset
    is label data (``DatasetIdentity.label_data``); on behaviour data keys of label-data-only mining are inert."""
    if not label_data:
        config = _without_inert_mining(config)
    if "trainer" in config:  # where results are logged does not change them
        from retrieval_zoo.tracking import TRACKING_KEYS

        config = {**config, "trainer": {k: v for k, v in config["trainer"].items() if k not in TRACKING_KEYS}}
    if text.is_default_encoder(str((config.get("model") or {}).get("encoder"))):
        # rows made before model.encoder existed used this encoder: the key must not make them look stale
        config = {**config, "model": {k: v for k, v in config["model"].items() if k != "encoder"}}
    config = _pinned(without_neutral_keys(config), SPEED_ONLY_KEY, SPEED_ONLY_HASHED_AS)
    payload = json.dumps({"config": config, "recipe": RECIPE, "dataset": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# Keys added after board rows were made, with the value that reproduces those rows: at that value a key is left
# out of the hash, so adding it does not make every row look stale (``index.approximate_factory`` only acts when
# ``approximate_above`` is set).
NEUTRAL_KEYS: dict[tuple[str, ...], Any] = {
    ("data", "features", "sentence_dtype"): "float32",
    ("index", "approximate_above"): None,
    ("data", "hard_negatives", "relative_margin"): None,
    ("validation", "wise_ft_alpha"): 1.0,
    ("validation", "average_top_k"): 1,
    ("runtime", "torch_threads"): None,
}
NEUTRAL_WITH = {("index", "approximate_factory"): ("index", "approximate_above")}
# Items per encoding batch changes how fast a run is, not its vectors beyond float rounding
# (tests/configs/test_shipped_configs.py), so a row made at another batch size is not stale: the hash always sees
# 1024, the value every board row before 2026-12-06 was made with, so those rows' stored hashes stay current.
SPEED_ONLY_KEY = ("data", "eval_batch_size")
SPEED_ONLY_HASHED_AS = 1024


# Keys of hard-negative mining added after board rows were made that cannot act where mining is off for the data
# (behaviour data under ``label_data_only``): left out of those rows' hashes, so adding them does not make the
# simshop rows look stale.
LABEL_DATA_MINING_KEYS = [("data", "hard_negatives", "relative_margin")]


def _without_inert_mining(config: dict[str, Any]) -> dict[str, Any]:
    if not _lookup(config, ("data", "hard_negatives", "label_data_only"), True):
        return config
    for path in LABEL_DATA_MINING_KEYS:
        config = _without(config, path)
    return config


def without_neutral_keys(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` less the ``NEUTRAL_KEYS`` at their neutral value (and the keys that only act with them)."""
    drop = [path for path, neutral in NEUTRAL_KEYS.items() if _lookup(config, path, neutral) == neutral]
    drop += [path for path, partner in NEUTRAL_WITH.items() if partner in drop]
    for path in drop:
        config = _without(config, path)
    # a section that held only neutral keys (``runtime``) goes too: rows made before it existed had none
    emptied = {path[0] for path in drop if config.get(path[0]) == {}}
    return {key: value for key, value in config.items() if key not in emptied}


def _lookup(config: dict[str, Any], path: tuple[str, ...], missing: Any) -> Any:
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return missing
        config = config[key]
    return config


def _edited(config: dict[str, Any], path: tuple[str, ...], edit) -> dict[str, Any]:
    """``config`` with ``edit(section, key)`` (a new section) applied at ``path``, where the key is present."""
    head, *rest = path
    if head not in config:
        return config
    if not rest:
        return edit(config, head)
    inner = config[head]
    return {**config, head: _edited(inner, tuple(rest), edit)} if isinstance(inner, dict) else config


def _without(config: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    return _edited(config, path, lambda section, key: {k: v for k, v in section.items() if k != key})


def _pinned(config: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``config`` with the key at ``path`` set to ``value`` where the key is present."""
    return _edited(config, path, lambda section, key: {**section, key: value})


def validation_settings(config: dict[str, Any]) -> ValidationSettings:
    try:
        return ValidationSettings(**config.get("validation", {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"validation config: {error}") from None


def with_valid_split(dataset: ProductSearchDataset, fraction: float) -> ProductSearchDataset:
    """The dataset with a ``valid`` split for model selection: its own if it has one; else a stable share of the
    train queries (or searches), by sha256 of the id, moved from train to valid and said in the protocol.
    Cross-validated datasets (Icecat) get theirs per fold (``fold_view``)."""
    if dataset.meta.get("cv_folds"):
        return dataset
    table, key = (dataset.searches, "search_id") if dataset.has_behaviour else (dataset.queries, "query_id")
    if (table["split"] == "valid").any() or fraction <= 0:
        return dataset
    from retrieval_zoo.data.checks import unit_hashes

    carved = table.with_columns(
        pl.when((pl.col("split") == "train") & (unit_hashes(table[key]) < fraction))
        .then(pl.lit("valid")).otherwise(pl.col("split")).alias("split"))
    what = "searches" if dataset.has_behaviour else "queries"
    note = (f"valid (model selection) = {fraction:.0%} of the train {what} by sha256({key}), "
            "carved by the runner since the data has no valid split")
    meta = {**dataset.meta, "protocol": f"{dataset.meta.get('protocol', dataset.name)}; {note}"}
    changes = {"searches": carved} if dataset.has_behaviour else {"queries": carved}
    return replace(dataset, meta=meta, **changes)


# -- one seed ---------------------------------------------------------------------------------------------
def run_once(config: dict[str, Any], dataset: ProductSearchDataset, identity: DatasetIdentity, seed: int,
             results_dir: Path, staging: Path, wandb: str | None, progress: bool,
             metrics: list[str] | None, load_seconds: float = 0.0) -> RunResult:
    """Train and evaluate one seed; its run folder is written under ``staging`` (``store.commit`` moves it).
    ``load_seconds`` (the dataset's loading, shared by the seeds) joins the per-stage timings."""
    name, variant = config["name"], config["variant"]
    dataset_slug = identity.key
    loggers = _loggers(config, dataset_slug, seed, results_dir, wandb)
    started = time.perf_counter()
    run_dir = results_dir / "runs" / dataset_slug / name / variant / f"seed{seed}"
    folder = store.staged_path(staging, results_dir, run_dir)
    folds = dataset.meta.get("cv_folds")
    if folds:
        outputs = [_search_keeping_weights(config, fold_view(dataset, f), seed, loggers, progress, folder, f)
                   for f in range(folds)]
    else:
        outputs = [_search_keeping_weights(config, dataset, seed, loggers, progress, folder, None)]
    run = pl.concat([o.run for o in outputs])
    units = pl.concat([o.units for o in outputs])
    curves = _tagged_by_fold([o.valid_curve for o in outputs])
    valid_queries = _tagged_by_fold([o.valid_queries for o in outputs])
    targets = build_targets(dataset.judgments, units, dataset.interactions if dataset.has_behaviour else None)
    wanted = metrics or [m for m in DEFAULT_METRICS if not m.startswith("p_") or dataset.has_behaviour]
    metrics_started = time.perf_counter()
    means, per_query = evaluate_run(targets, run, wanted)
    if all(o.rerank is not None for o in outputs):
        means |= rerank_metrics(targets, pl.concat([o.rerank for o in outputs]))
    costs = _merge_costs([o.costs for o in outputs])
    costs["metrics_seconds"] = round(time.perf_counter() - metrics_started, 2)
    costs["load_seconds"] = round(load_seconds, 2)
    costs["total_seconds"] = round(time.perf_counter() - started, 2)
    result = RunResult(dataset_slug, name, variant, seed, means, costs, run_dir, config,
                       dataset_spec=identity.spec,
                       config_hash=config_hash(config, identity.fingerprint, identity.label_data),
                       dataset_fingerprint=identity.fingerprint, encoder=outputs[0].encoder)
    write_run_folder(result, dataset, folder, run, per_query, units, targets, pl.concat(curves) if curves else None,
                     pl.concat(valid_queries) if valid_queries else None)
    _log_final(loggers, result, folder)
    return result


def _tagged_by_fold(frames: list[pl.DataFrame | None]) -> list[pl.DataFrame]:
    """Each fold's frame with its fold number, so the folds' valid curves and per-query values stay apart in one
    file; folds without validation (None) are left out."""
    return [frame.with_columns(pl.lit(i, pl.Int64).alias("fold")) for i, frame in enumerate(frames)
            if frame is not None]


def _search_keeping_weights(config: dict[str, Any], dataset: ProductSearchDataset, seed: int, loggers: list,
                            progress: bool, folder: Path, fold: int | None) -> SearchOutput:
    """``train_and_search``, its selected weights written to the staged run folder at once and its model freed
    before the next fold trains. Held to the run's end, each fold's weights and the reference cycles Lightning
    leaves between a trainer and its module (freed only by a full collection, which CPython runs rarely) piled
    up: ~1.1 GiB a fold for mgdspr/pretrained on Icecat, 16.5 GiB at the peak of three runs in one process."""
    output = train_and_search(config, dataset, seed, loggers, progress)
    if output.state is not None:
        write_model_state(output.state, fold, folder)
    output = replace(output, state=None)
    gc.collect()
    return output


def fold_view(dataset: ProductSearchDataset, fold: int) -> ProductSearchDataset:
    """The dataset with fold ``fold``'s queries as test, the next fold's (an inner fold, for model selection)
    as valid and every other fold's as train: the test fold is never seen by training or selection."""
    inner = (fold + 1) % int(dataset.meta["cv_folds"])
    queries = dataset.queries.with_columns(
        pl.when(pl.col("fold") == fold).then(pl.lit("test"))
        .when(pl.col("fold") == inner).then(pl.lit("valid"))
        .otherwise(pl.lit("train")).alias("split")
    )
    return ProductSearchDataset(
        name=f"{dataset.name}-fold{fold}", products=dataset.products, queries=queries,
        judgments=dataset.judgments, searches=dataset.searches, interactions=dataset.interactions,
        users=dataset.users, images=dataset.images, image_features=dataset.image_features,
        meta={**dataset.meta, "cv_folds": None},
    )


def train_and_search(config: dict[str, Any], dataset: ProductSearchDataset, seed: int, loggers: list,
                     progress: bool) -> SearchOutput:
    L.seed_everything(seed, workers=True, verbose=False)
    model = build_model(config)
    datamodule = data_module_for(config, dataset, model, seed)
    started = time.perf_counter()
    datamodule.setup()
    features_seconds = time.perf_counter() - started
    if progress and not on_terminal():  # a log's record of the stage before training (a terminal has its bars)
        print(f"inputs ready in {features_seconds:.1f} s (features, tokens; hard negatives come with the first "
              f"train loader)  {memory_text()}",
              file=sys.stderr, flush=True)
    test = datamodule.units.indices_of_split("test")
    if len(test) == 0:
        raise ConfigError(f"dataset '{dataset.name}' has no test units; check its split column")
    k = int(config["eval"]["k"])
    if isinstance(model, RetrievalModule):
        scores, indices, costs, score_pairs = _dense_search(model, datamodule, test, config, seed, loggers,
                                                            progress, k)
    else:
        scores, indices, costs, score_pairs = _retriever_search(model, datamodule, test, k, config)
    units = datamodule.units
    unit_ids = [units.unit_ids[i] for i in test]
    run = run_from_topk(unit_ids, datamodule.catalog.product_ids, scores, indices)
    unit_frame = pl.DataFrame({"unit_id": unit_ids, "query_id": [units.query_ids[i] for i in test],
                               "group": [units.groups[i] for i in test]}, schema_overrides={"group": pl.Utf8})
    rerank = None
    if "rerank" in dataset.meta.get("eval_protocols", []):
        rerank = rerank_run(unit_frame, dataset.judgments, datamodule.catalog.product_ids, score_pairs)
    costs["features_seconds"] = round(features_seconds, 2)
    curve = costs.pop("valid_curve", None)
    valid_queries = costs.pop("valid_queries", None)
    state = selected_state(model) if isinstance(model, RetrievalModule) else None
    encoder = (encoder_of(config) or text.DEFAULT_ENCODER) if uses_encoder(model) else None
    return SearchOutput(run, unit_frame, costs, rerank, pl.DataFrame(curve) if curve else None, state, encoder,
                        valid_queries)


def data_module_for(config: dict[str, Any], dataset: ProductSearchDataset, model, seed: int) -> RetrievalDataModule:
    """The data module a run of ``model`` (built from ``config``) reads ``dataset`` through: the fields the model
    needs (required ones checked) and the config's data settings; not set up yet (``setup`` builds the inputs)."""
    fields = fields_to_build(dataset, model.required_fields, model.optional_fields, config["name"])
    return RetrievalDataModule(dataset, fields, data_settings(config["data"], encoder_of(config)), seed)


def data_settings(section: dict[str, Any], encoder: str | None = None) -> DataSettings:
    """The ``data`` section as settings; ``encoder`` (``model.encoder``, None: the default) makes the tokens and
    sentence vectors."""
    section = dict(section)
    features = FeatureSettings(**section.pop("features", {}), encoder=encoder or text.DEFAULT_ENCODER)
    return DataSettings(**section, features=features)


def _dense_search(module: RetrievalModule, datamodule: RetrievalDataModule, test: np.ndarray,
                  config: dict[str, Any], seed: int, loggers: list, progress: bool, k: int):
    module.attach(datamodule)
    trainer_config = _without_empty_valid_loss(dict(config["trainer"]), datamodule)
    fit_seconds, trainer, selection, selected_catalogue, valid_queries = 0.0, None, None, None, None
    if module.model.trainable and trainer_config.get("max_steps", -1) != 0:
        with tempfile.TemporaryDirectory(prefix="rz-checkpoints-") as checkpoints:
            validation = _validation(config, datamodule, seed, Path(checkpoints))
            callbacks = [validation, *selection_callbacks(validation.settings, Path(checkpoints))] if validation else []
            trainer = _trainer(trainer_config, loggers, progress, callbacks)
            started = time.perf_counter()
            trainer.fit(module, datamodule=datamodule)
            fit_seconds = time.perf_counter() - started
            if validation is not None:
                selection = select_best(trainer, module, validation)
                # before the folder goes
                selected_catalogue = validation.catalogue_of(selection.catalogue_key)
                valid_queries = validation.valid_per_query()
    if trainer is not None:
        device = trainer.strategy.root_device
    else:
        device = torch.device("cuda" if torch.cuda.is_available() and trainer_config["accelerator"] != "cpu"
                              else "cpu")
    module.to(device)
    batch = int(config["data"]["eval_batch_size"])
    started = time.perf_counter()
    if selected_catalogue is None:
        items = module.encode_catalog(batch_size=batch, progress=show_bars(progress))  # sharded over DDP ranks
        encode_seconds = items_seconds = time.perf_counter() - started
    else:  # the selected check encoded this very state already (validation.catalogue_of)
        items, items_seconds = selected_catalogue
        encode_seconds = time.perf_counter() - started
    if trainer is not None and trainer.global_rank != 0:  # DDP workers stop here; rank 0 searches and evaluates
        raise SystemExit(0)
    started = time.perf_counter()
    queries = module.encode_units(datamodule, test)
    query_seconds = time.perf_counter() - started
    index = config["index"]
    factory = chosen_factory(index, len(items))
    result = index_and_search(items, queries, k, factory, index["nprobe"], index["ef_search"], seed)

    def score_pairs(unit_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", queries[unit_rows], items[item_rows])

    total, trainable = module.count_parameters()
    costs = {
        "params": total, "trainable_params": trainable,
        # fit wall time (Lightning overhead included); the pair rate counts the training epochs only, and is
        # unknown (None) under spawn-based strategies, whose workers keep their counters
        "train_seconds": round(fit_seconds, 2),
        "train_pairs_per_s": round(module.train_examples / module.train_seconds, 1) if module.train_seconds else None,
        # the catalogue encoding's own rate, also where the test search reused the selected check's vectors
        # (encode_seconds is then the time to read them back)
        "encode_items_per_s": round(len(items) / items_seconds, 1),
        "query_latency_ms": round(1000 * query_seconds / len(test) + result.latency_ms, 3),
        # the stages apart (timings.json): catalogue and query encoding, index build, search
        "encode_seconds": round(encode_seconds, 2), "query_encode_seconds": round(query_seconds, 2),
        "index_seconds": round(result.build_seconds, 2), "search_seconds": round(result.search_seconds, 2),
        "index": result.factory, "index_mb": round(result.index_bytes / 2**20, 2),
        "catalogue_size": len(items), "test_units": len(test),
        **_selection_costs(selection),
        **({"valid_queries": valid_queries} if valid_queries is not None else {}),
        **datamodule.mining_summary(),
        **_model_costs(module.model),
    }
    return result.scores, result.indices, costs, score_pairs


def _validation(config: dict[str, Any], datamodule: RetrievalDataModule, seed: int,
                checkpoints: Path) -> RetrievalValidation | None:
    """The retrieval-metric validation of this run, or None (switched off, or no valid unit to score)."""
    settings = validation_settings(config)
    valid = _valid_units(settings, datamodule)
    if len(valid) == 0:
        return None
    return RetrievalValidation(datamodule, valid, settings, config["index"], seed, checkpoints)


def _valid_units(settings: ValidationSettings, datamodule: RetrievalDataModule) -> np.ndarray:
    """The valid units model selection scores (none when validation is switched off)."""
    units = datamodule.units
    if not settings.enabled:
        return np.array([], dtype=np.int64)
    return valid_sample(units.unit_ids, units.indices_of_split("valid"), settings.max_queries)


def _selection_costs(selection: Selection | None) -> dict[str, Any]:
    """Epochs trained, the epoch selected on valid (0 = the untrained start) and the validation's own time."""
    if selection is None:
        return {}
    # with validation.average_top_k > 1: how many checks the kept state averages (0: the start or one check)
    averaged = {"averaged_checks": len(selection.averaged_epochs)} if "averaged" in selection.curve[0] else {}
    return {"epochs_trained": selection.epochs_trained, "best_epoch": selection.best_epoch, **averaged,
            "validation_seconds": round(selection.validation_seconds, 2), "valid_curve": selection.curve}


def _model_costs(model) -> dict[str, Any]:
    """Costs a model reports itself (e.g. MRSE's one-off image-feature extraction)."""
    return dict(getattr(model, "extra_costs", {}) or {})


def _retriever_search(retriever, datamodule: RetrievalDataModule, test: np.ndarray, k: int,
                      config: dict[str, Any]):
    selection_costs = index_retriever(retriever, datamodule, config)
    texts = [datamodule.units.texts[i] for i in test]
    started = time.perf_counter()
    scores, indices = retriever.retrieve(texts, k)
    seconds = time.perf_counter() - started
    costs = {"params": 0, "trainable_params": 0, "train_seconds": 0.0, "train_pairs_per_s": None,
             "encode_items_per_s": round(retriever.n_items / retriever.index_seconds, 1),
             "query_latency_ms": round(1000 * seconds / len(test), 3), "index": "bm25s (sparse)",
             "index_seconds": round(retriever.index_seconds, 2), "search_seconds": round(seconds, 2),
             "index_mb": None, "catalogue_size": retriever.n_items, "test_units": len(test), **selection_costs}

    def score_pairs(unit_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return retriever.score_pairs(texts, unit_rows, item_rows)

    return scores, indices, costs, score_pairs


def index_retriever(retriever, datamodule: RetrievalDataModule, config: dict[str, Any]) -> dict[str, Any]:
    """Index the catalogue for a sparse retriever, its text chosen on valid where it has choices (BM25's
    ``item_text_choices``): the costs of that choice, {} without one (no choices, or no valid units).
    Deterministic, so ``serving`` rebuilds a finished run's index with the same call."""
    settings = validation_settings(config)
    valid = _valid_units(settings, datamodule)
    if not getattr(retriever, "item_text_choices", None) or len(valid) == 0:
        retriever.index(datamodule)
        return {}
    started = time.perf_counter()
    scorer = ValidScorer(datamodule, valid, settings.metrics)
    valid_texts = [datamodule.units.texts[i] for i in valid]
    tried = retriever.select_item_text(datamodule, valid_texts, settings.k,
                                       lambda scores, indices: scorer.score(scores, indices)[settings.monitor])
    return {"validation_seconds": round(time.perf_counter() - started, 2),
            "item_text_choice": text_choice_name(retriever.item_text_change),
            f"item_text_valid_{settings.monitor}": ", ".join(f"{c.name} {c.score:.4f}" for c in tried)}


def _without_empty_valid_loss(trainer_config: dict[str, Any], datamodule: RetrievalDataModule) -> dict[str, Any]:
    """``trainer_config`` with the valid-loss batches (``limit_val_batches``) turned off, and a line saying so, when
    the valid split has no positive pairs to compute that loss on (Lightning would only warn that a list is empty)."""
    if trainer_config.get("limit_val_batches") and len(datamodule.valid_pairs[0]) == 0:
        print(f"trainer.limit_val_batches={trainer_config['limit_val_batches']} skipped: the valid split of "
              f"'{datamodule.dataset.name}' has no positive pairs to compute the valid loss on (selection by the "
              "retrieval metric is unaffected)", file=sys.stderr, flush=True)
        trainer_config["limit_val_batches"] = 0
    return trainer_config


def _trainer(trainer_config: dict[str, Any], loggers: list, progress: bool,
             callbacks: list[L.Callback]) -> L.Trainer:
    """Lightning's Trainer for ``trainer_config`` (the config's trainer section, less the runner's own keys in
    ``tracking.TRACKING_KEYS``): a progress bar on a terminal, plain per-epoch lines in a log, the harmless
    warnings filtered in every training process (``quiet.py``), ``log_every_n_steps`` capped at a quarter of an
    epoch's steps (``tracking.LogEveryEpoch``)."""
    quiet()
    settings = {k: v for k, v in trainer_config.items() if k not in TRACKING_KEYS}
    display = progress_callbacks(progress)
    ours = [Quiet(), *callbacks, LogEveryEpoch(), *display]  # the display last: it shows what the others logged
    try:
        return L.Trainer(**settings, logger=loggers or False, callbacks=ours,
                         enable_checkpointing=bool(callbacks), enable_progress_bar=bool(display),
                         enable_model_summary=False, num_sanity_val_steps=0, deterministic="warn")
    except TypeError as error:
        raise ConfigError(f"trainer config: {error}") from None


def _merge_costs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Folds of a cross-validation: seconds add up, rates and sizes are averaged, differing texts are listed."""
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {}
    for key, value in parts[0].items():
        values = [p.get(key) for p in parts]
        if isinstance(value, (int, float)) and all(isinstance(v, (int, float)) for v in values):
            merged[key] = round(sum(values), 2) if key.endswith("_seconds") or key == "test_units" else round(
                float(np.mean(values)), 3)
        elif isinstance(value, str) and len(set(values)) > 1:  # e.g. a choice made per fold: each fold's, in order
            merged[key] = " | ".join(str(v) for v in values)
        else:
            merged[key] = value
    merged["folds"] = len(parts)
    return merged


def _loggers(config: dict[str, Any], dataset_slug: str, seed: int, results_dir: Path, wandb: str | None) -> list:
    """The seed's loggers: a CSV logger under ``results/runs/logs/`` and, unless W&B is disabled, a W&B run
    (``tracking.wandb_logger``: the mode, folder and names it takes from ``wandb`` and the WANDB_* variables)."""
    from pytorch_lightning.loggers import CSVLogger

    quiet()
    name = f"{dataset_slug}/{config['name']}/{config['variant']}/seed{seed}"
    loggers: list = [CSVLogger(results_dir / "runs" / "logs", name=name, version="")]
    tracker = tracking.wandb_logger(config, dataset_slug, seed, results_dir, wandb)
    if tracker is not None:
        loggers.append(tracker)
    return loggers


def _log_final(loggers: list, result: RunResult, folder: Path | None = None) -> None:
    """The seed's test metrics to its loggers; W&B also gets the costs, the per-query table and (with
    ``trainer.wandb_artifact``) the run folder, read from ``folder`` (default: where this process staged
    ``result.run_dir``, else the committed folder), and its run is finished."""
    for logger in loggers:
        try:
            if tracking.is_wandb(logger):
                tracking.log_final(logger, result, folder or tracking.staged_folder(result.run_dir))
                continue
            logger.log_metrics({f"test/{k}": v for k, v in result.metrics.items()})
            logger.log_hyperparams({"seed": result.seed, "dataset": result.dataset})
            logger.finalize("success")
        except Exception as error:  # noqa: BLE001 - W&B must never fail a run
            print(f"logging final metrics to {type(logger).__name__} failed: {' '.join(str(error).split())}")
