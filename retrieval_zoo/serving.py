"""Reuse a finished run: reload its selected model from the run folder, encode, and search a catalogue.

Every run folder holds the resolved ``config.yaml``, a ``meta.json`` naming the dataset (``dataset_spec``) and,
for trained two-tower models, ``model.pt``: the ``state_dict`` of the ``RetrievalModule`` (model and loss) in
the state selected on valid, the one that produced the run's metrics. On cross-validated datasets (Icecat,
``cv_folds``) each fold trained its own model, saved as ``model-fold<k>.pt``; ``load_model(..., fold=k)``
reloads one of them (fold 0 by default) with that fold's split. BM25 has no weights: its index is rebuilt
from the catalogue.

``load_model(run_dir)`` rebuilds the model from the config, prepares it on the run's dataset (what a model
derives from the data, e.g. MGDSPR's hashed words, MRSE's frozen image features, is recomputed as in
training), loads the saved weights and returns a ``ServedModel``::

    model = rz.load_model("results/runs/simshop/mmse/default/seed0")
    model.search(["red shoe"], k=5)          # query, rank, product_id, title, score
    model.encode_queries(["red shoe"])       # float32 [1, dim]
    model.encode_items()                     # the catalogue's vectors, float32 [n_items, dim]
    model.evaluate()                         # re-encode + faiss + ranx: the run's test metrics again
    model.with_catalogue(new_products).search(["red shoe"], 5)   # serve another catalogue

Limits:

- ``search`` / ``encode_queries`` serve bare query texts, like the queries of label data (no user). Models
  configured to read the searcher's behaviour (``user``, ``user_history``, ``query_history``: MGDSPR and MRSE
  on behaviour data) raise a clear error there; they still encode the dataset's own searches
  (``encode_units``, ``evaluate``), and their no-user variants serve text.
- MGDSPR learns an embedding per catalogue item (item ids, and side features looked up by item), so it serves
  the catalogue it was trained on only; ``with_catalogue`` refuses it.
- A new catalogue's categorical columns (category, brand, shop) are mapped through the training catalogue's
  ids; values the model never saw read as unknown (id 0). Models reading item images need ``images=`` (or
  ``image_features=``) for a new catalogue.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from retrieval_zoo.data.datamodule import RetrievalDataModule
from retrieval_zoo.data.dataset import SCHEMA, ProductSearchDataset
from retrieval_zoo.data.features import (
    DEFAULT_ITEM_TEXT,
    ITEM_FIELDS,
    ItemCatalog,
    QueryUnits,
    build_catalog,
    build_units,
    dataset_fields,
)
from retrieval_zoo.models.base import RetrievalModule
from retrieval_zoo.models.registry import encoder_of

USER_FIELDS = frozenset({"user", "user_history", "query_history"})
IMAGE_FIELDS = frozenset({"item_image", "item_image_features"})
CATEGORICAL_FIELDS = {"item_category": "category", "item_brand": "brand", "item_shop": "shop_id"}
# models whose item vectors are tied to catalogue rows (learned per-item embeddings)
CATALOGUE_BOUND = {"mgdspr": "it learns an embedding per catalogue item (item ids, and side features looked up by "
                             "item index)"}


class ServingError(ValueError):
    """A request the reloaded model cannot serve; the message says why and what works instead."""


@dataclass
class _Prepared:
    """What ``TwoTowerModel.prepare`` reads: a data module's dataset, catalogue, units and settings."""

    dataset: Any
    catalog: ItemCatalog
    units: QueryUnits
    settings: Any
    seed: int = 0
    fields: set[str] = field(default_factory=set)

    def setup(self, stage: str | None = None) -> None:
        """Built already (``RetrievalModule.attach`` calls it)."""


@dataclass
class _TextQueries:
    """The two attributes ``build_units`` reads of a dataset, for bare query texts (label-style units)."""

    queries: pl.DataFrame
    has_behaviour: bool = False


def load_model(run_dir: str | Path, dataset: str | ProductSearchDataset | None = None, fold: int = 0,
               device: str | torch.device | None = None) -> ServedModel:
    """The run's selected model, ready to encode and search (see the module docstring).

    ``dataset``: the catalogue and queries to serve; default the run's own (``meta.json``'s ``dataset_spec``),
    else a spec or a ``ProductSearchDataset``. ``fold``: which fold's model on cross-validated datasets.
    ``device``: default as the runner chose (a GPU when there is one and the config allows it).
    """
    from retrieval_zoo.data.registry import load_dataset

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    config = _ordered(yaml.safe_load((run_dir / "config.yaml").read_text()))
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").exists() else {}
    spec = meta.get("dataset_spec")
    if dataset is None:
        if not spec:
            raise ServingError(f"{run_dir}/meta.json names no dataset_spec; pass dataset=")
        try:
            data = load_dataset(spec)
        except ValueError as error:
            raise ServingError(f"cannot load the run's dataset '{spec}' ({error}); pass dataset=") from None
    else:
        data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    _warn_if_other_data(spec, data, meta.get("dataset_fingerprint"))
    return ServedModel.from_run(run_dir, config, data, int(meta.get("seed", 0)), fold, device)


def _warn_if_other_data(spec: str | None, data: ProductSearchDataset, fingerprint: str | None) -> None:
    from retrieval_zoo.runner import dataset_identity

    if not spec or not fingerprint:
        return
    try:
        same = dataset_identity(spec, data).fingerprint == fingerprint
    except Exception:  # noqa: BLE001 - the check is advisory; a folder gone missing must not stop serving
        return
    if not same:
        warnings.warn(f"the dataset differs from the one the run was trained and scored on ({spec}): vectors and "
                      "metrics will not reproduce the run's", stacklevel=3)


class ServedModel:
    """A reloaded run's model bound to one catalogue (see the module docstring). Build it with ``load_model``."""

    def __init__(self, run_dir: Path, config: dict[str, Any], dataset: ProductSearchDataset, seed: int,
                 fields: set[str], catalog: ItemCatalog, datamodule: RetrievalDataModule | None, model,
                 state: dict | None, device: torch.device, unit_extras: set[str]):
        self.run_dir, self.config, self.dataset, self.seed = run_dir, config, dataset, seed
        self.fields, self.catalog = fields, catalog
        self.datamodule = datamodule   # the run's data module (None when serving a new catalogue)
        self.device = device
        self._model = model            # a RetrievalModule, or a retriever (BM25)
        self._state = state            # the saved weights (CPU), reloaded into every rebuilt module
        self._unit_extras = unit_extras  # unit tensors the model's prepare adds (derived per query text)
        self._item_vectors: np.ndarray | None = None
        self._index = None

    # -- building ---------------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: Path, config: dict[str, Any], data: ProductSearchDataset, seed: int, fold: int,
                 device: str | torch.device | None) -> ServedModel:
        from retrieval_zoo.runner import (
            data_module_for,
            fold_view,
            index_retriever,
            validation_settings,
            with_valid_split,
        )

        selection = validation_settings(config)
        dataset_name = data.name
        data = with_valid_split(data, selection.valid_fraction if selection.enabled else 0.0)
        folds = data.meta.get("cv_folds")
        if folds:
            if not 0 <= fold < int(folds):
                raise ServingError(f"fold must be in 0..{int(folds) - 1}, got {fold}")
            data = fold_view(data, fold)
        model = _built(config, seed)
        datamodule = data_module_for(config, data, model, seed)
        fields = datamodule.fields
        datamodule.setup()
        device = _device(config, device)
        state, extras = None, set()
        if isinstance(model, RetrievalModule):
            from retrieval_zoo.run_folder import model_state_file

            path = run_dir / model_state_file(fold if folds else None)
            if not path.exists():
                raise FileNotFoundError(
                    f"{run_dir} holds no {path.name}: weights stay on the machine that made the run (git keeps only "
                    f"its scores, config and curves); rerun it with `python -m retrieval_zoo bench --dataset "
                    f"{dataset_name} --model {config['name']} --variant {config['variant']}` to reuse the model")
            state = torch.load(path, map_location="cpu", weights_only=True)
            before = set(datamodule.units.tensors)
            model.attach(datamodule)
            extras = set(datamodule.units.tensors) - before
            _load_state(model, state, config["name"])
            model.to(device).eval()
        else:  # the text the run chose on valid, chosen again (same data, same valid units)
            index_retriever(model, datamodule, config)
        return cls(run_dir, config, data, seed, fields, datamodule.catalog, datamodule, model, state, device, extras)

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def dense(self) -> bool:
        return isinstance(self._model, RetrievalModule)

    @property
    def module(self) -> RetrievalModule | None:
        """The reloaded RetrievalModule (None for a retriever without weights, BM25)."""
        return self._model if self.dense else None

    @property
    def units(self) -> QueryUnits | None:
        """The dataset's query units (searches or queries) as the run built them; None on a new catalogue."""
        return None if self.datamodule is None else self.datamodule.units

    @property
    def product_ids(self) -> list[str]:
        return self.catalog.product_ids

    def with_catalogue(self, products: pl.DataFrame, images: np.ndarray | None = None,
                       image_features: pl.DataFrame | None = None) -> ServedModel:
        """The same model serving ``products`` (canonical product schema; ``images`` uint8 [n, H, W, 3]
        row-aligned, or ``image_features`` product_id + features, for models reading item images)."""
        if self.name in CATALOGUE_BOUND:
            raise ServingError(f"{self.name} serves only the catalogue it was trained on: "
                               f"{CATALOGUE_BOUND[self.name]}")
        catalogue = _catalogue_dataset(products, images, image_features)
        missing = (self.fields & IMAGE_FIELDS) and not (dataset_fields(catalogue) & IMAGE_FIELDS)
        if missing:
            raise ServingError(f"{self.name} reads item images here ({sorted(self.fields & IMAGE_FIELDS)}); pass "
                               "images= (uint8 [n, H, W, 3]) or image_features= for the new catalogue")
        item_fields = self.fields & ITEM_FIELDS
        settings = self._data_settings()
        catalog = build_catalog(catalogue, item_fields, settings.features)
        _align_categories(catalog, catalogue.products, self.dataset.products)
        if not self.dense:
            retriever = _built(self.config, self.seed)
            datamodule = RetrievalDataModule(catalogue, item_fields, settings, self.seed)
            datamodule.catalog = catalog  # a built catalogue: setup does nothing more
            retriever.item_text_change = self._model.item_text_change  # the text the run chose on valid
            retriever.index(datamodule)
            return ServedModel(self.run_dir, self.config, catalogue, self.seed, self.fields, catalog, None,
                               retriever, None, self.device, set())
        module = _built(self.config, self.seed)
        units = build_units(_TextQueries(catalogue.queries), set(), settings.features, catalog)
        module.attach(_Prepared(catalogue, catalog, units, settings, self.seed, item_fields))
        _load_state(module, self._state, self.name)
        module.to(self.device).eval()
        return ServedModel(self.run_dir, self.config, catalogue, self.seed, self.fields, catalog, None, module,
                           self._state, self.device, self._unit_extras)

    # -- encoding -----------------------------------------------------------------------------------------
    def encode_items(self, products: pl.DataFrame | None = None) -> np.ndarray:
        """Item vectors, float32 [n, dim]: of the bound catalogue (default), or of ``products`` (canonical
        product schema, encoded as ``with_catalogue(products)`` would)."""
        self._need_vectors("encode_items")
        if products is not None:
            return self.with_catalogue(products).encode_items()
        if self._item_vectors is None:
            batch = int(self.config["data"]["eval_batch_size"])
            self._item_vectors = self._model.encode_catalog(batch_size=batch, progress=False)
        return self._item_vectors

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Query vectors, float32 [len(texts), dim], of bare query texts (label-style: no user)."""
        self._need_vectors("encode_queries")
        units = self._text_units(texts)
        module = self._model
        chunks = []
        size = int(self.config["data"]["eval_batch_size"])
        with torch.no_grad():
            module.eval()
            for start in range(0, len(units), size):
                batch = units.gather(torch.arange(start, min(start + size, len(units))))
                batch = {k: v.to(module.device) for k, v in batch.items()}
                chunks.append(module.encode_queries(batch).float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    def encode_units(self, unit_ids: list[str] | None = None, split: str = "test") -> np.ndarray:
        """Query vectors of the dataset's own units (searches on behaviour data, with their users' histories;
        else queries), as in the run: ``unit_ids`` in that order, default every unit of ``split``."""
        self._need_vectors("encode_units")
        return self._model.encode_units(self._run_datamodule(), self._unit_rows(unit_ids, split))

    # -- searching ------------------------------------------------------------------------------------------
    def search(self, texts: list[str] | str, k: int = 10) -> pl.DataFrame:
        """The top ``k`` catalogue items of each query text: query, rank (from 1), product_id, title, score."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        scores, indices = self._top_k(texts, k)
        return self._results(texts, scores, indices)

    def _top_k(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.dense:
            _check_texts(texts)
            return self._model.retrieve(texts, k)
        from retrieval_zoo.index import search

        return search(self.index, self.encode_queries(texts), k)

    @property
    def index(self):
        """The faiss index of the catalogue vectors, built as the run built it (config ``index``)."""
        self._need_vectors("index")
        if self._index is None:
            from retrieval_zoo.index import build_index

            settings = self.config["index"]
            self._index = build_index(self.encode_items(), settings["factory"], settings["nprobe"],
                                      settings["ef_search"], self.seed)
        return self._index

    def _results(self, texts: list[str], scores: np.ndarray, indices: np.ndarray) -> pl.DataFrame:
        k = indices.shape[1] if indices.ndim == 2 else 0
        rows = np.repeat(np.arange(len(texts)), k)
        flat = indices.reshape(-1)
        keep = flat >= 0
        rank = np.tile(np.arange(1, k + 1), len(texts))
        return pl.DataFrame({
            "query": pl.Series([texts[i] for i in rows[keep]], dtype=pl.Utf8),
            "rank": pl.Series(rank[keep], dtype=pl.Int64),
            "product_id": pl.Series(self.catalog.product_ids, dtype=pl.Utf8).gather(flat[keep]),
            "title": pl.Series(self.catalog.titles, dtype=pl.Utf8).gather(flat[keep]),
            "score": pl.Series(scores.reshape(-1)[keep].astype(np.float64)),
        })

    # -- reproducing the run ---------------------------------------------------------------------------------
    def evaluate(self, metrics: list[str] | None = None, split: str = "test"
                 ) -> tuple[dict[str, float], pl.DataFrame, pl.DataFrame]:
        """(mean metrics, per-query table, ranked run) of ``split``, computed as the runner does: the catalogue
        and the units re-encoded, faiss top K (BM25: its own retrieval), ranx. On the run's own dataset and
        device the means equal the run's ``metrics.json`` (cross-validated runs: this fold's share of it).
        ``metrics``: default those of the run's ``metrics.json``."""
        from retrieval_zoo import evaluation as ev
        from retrieval_zoo.index import index_and_search

        rows = self._unit_rows(None, split)
        k = int(self.config["eval"]["k"])
        units = self.units
        if self.dense:
            items, queries = self.encode_items(), self.encode_units(split=split)
            settings = self.config["index"]
            found = index_and_search(items, queries, k, settings["factory"], settings["nprobe"],
                                     settings["ef_search"], self.seed)
            scores, indices = found.scores, found.indices

            def score_pairs(unit_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
                return np.einsum("ij,ij->i", queries[unit_rows], items[item_rows])
        else:
            texts = [units.texts[i] for i in rows]
            scores, indices = self._model.retrieve(texts, k)

            def score_pairs(unit_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
                return self._model.score_pairs(texts, unit_rows, item_rows)
        unit_ids = [units.unit_ids[i] for i in rows]
        run = ev.run_from_topk(unit_ids, self.catalog.product_ids, scores, indices)
        unit_frame = pl.DataFrame({"unit_id": unit_ids, "query_id": [units.query_ids[i] for i in rows],
                                   "group": [units.groups[i] for i in rows]}, schema_overrides={"group": pl.Utf8})
        data = self.dataset
        targets = ev.build_targets(data.judgments, unit_frame, data.interactions if data.has_behaviour else None)
        wanted = metrics or self._run_metrics() or [m for m in ev.DEFAULT_METRICS
                                                    if not m.startswith("p_") or data.has_behaviour]
        means, per_query = ev.evaluate_run(targets, run, wanted)
        if "rerank" in data.meta.get("eval_protocols", []) and metrics is None:
            means |= ev.rerank_metrics(targets, ev.rerank_run(unit_frame, data.judgments, self.catalog.product_ids,
                                                        score_pairs))
        return means, per_query, run

    def _run_metrics(self) -> list[str]:
        path = self.run_dir / "metrics.json"
        if not path.exists():
            return []
        names = json.loads(path.read_text())
        return [n for n in names if "[" not in n and n != "n_queries" and not n.startswith("rerank_")]

    # -- helpers ------------------------------------------------------------------------------------------
    def _need_vectors(self, what: str) -> None:
        if not self.dense:
            raise ServingError(f"{self.name} is a sparse retriever without vectors ({what}); use search, which "
                               "queries its index")

    def _data_settings(self):
        from retrieval_zoo.runner import data_settings

        return data_settings(self.config["data"], encoder_of(self.config))

    def _run_datamodule(self) -> RetrievalDataModule:
        if self.datamodule is None:
            raise ServingError("this model serves a new catalogue, without the dataset's units or judgments; use "
                               "encode_queries / search, or the model load_model returned")
        return self.datamodule

    def _unit_rows(self, unit_ids: list[str] | None, split: str) -> np.ndarray:
        units = self._run_datamodule().units
        if unit_ids is None:
            rows = units.indices_of_split(split)
            if len(rows) == 0:
                raise ServingError(f"the dataset has no {split} units")
            return rows
        position = {u: i for i, u in enumerate(units.unit_ids)}
        unknown = [u for u in unit_ids if u not in position]
        if unknown:
            raise ServingError(f"unknown unit ids {unknown[:5]} ({len(unknown)} in all)")
        return np.array([position[u] for u in unit_ids], dtype=np.int64)

    def _text_units(self, texts: list[str]) -> QueryUnits:
        """Query-side inputs of bare texts, built as the data module builds a query's (plus what the model's
        ``prepare`` derives from a unit's text, e.g. MGDSPR's hashed words)."""
        users = sorted(self.fields & USER_FIELDS)
        if users:
            raise ServingError(f"{self.name} reads the searcher's behaviour here ({', '.join(users)}), so it "
                               "encodes the dataset's searches (encode_units, evaluate), not bare query texts; "
                               "its no-user variant (or a label-only dataset) serves text queries")
        _check_texts(texts)
        queries = pl.DataFrame({"query_id": [f"text{i}" for i in range(len(texts))], "query": texts,
                                "group": [None] * len(texts), "split": ["test"] * len(texts)},
                               schema={"query_id": pl.Utf8, "query": pl.Utf8, "group": pl.Utf8, "split": pl.Utf8})
        units = build_units(_TextQueries(queries), self.fields, self._data_settings().features, self.catalog)
        if self._unit_extras:
            # the model derives these from a unit's text in prepare; run it on the texts' units, weights kept
            module = self._model
            state = {name: tensor.clone() for name, tensor in module.state_dict().items()}
            module.model.prepare(_Prepared(self.dataset, _shallow_copy(self.catalog), units,
                                           self._data_settings(), self.seed, self.fields))
            _load_state(module, state, self.name)
            module.to(self.device)
        return units


def _ordered(config: dict[str, Any]) -> dict[str, Any]:
    """The config with ``data.features.item_text`` in composing order. Run folders written before config.yaml
    kept its key order hold the keys sorted; a sorted set of exactly the default columns is read in the default
    order (the one those runs used unless overridden)."""
    budgets = config.get("data", {}).get("features", {}).get("item_text")
    if isinstance(budgets, dict) and list(budgets) == sorted(DEFAULT_ITEM_TEXT) != list(DEFAULT_ITEM_TEXT):
        config["data"]["features"]["item_text"] = {column: budgets[column] for column in DEFAULT_ITEM_TEXT}
    return config


def _built(config: dict[str, Any], seed: int):
    """The config's model, its initial weights drawn as the run drew them (they are overwritten on load)."""
    from retrieval_zoo.models.registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(config)


def _device(config: dict[str, Any], device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    allowed = config.get("trainer", {}).get("accelerator", "auto") != "cpu"
    return torch.device("cuda" if allowed and torch.cuda.is_available() else "cpu")


def _load_state(module: RetrievalModule, state: dict[str, torch.Tensor], name: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise ServingError(f"the saved {name} weights do not fit the model built from the run's config and data "
                           f"({first[0].strip()}); reload it on the dataset it was trained on") from None


def _check_texts(texts: list[str]) -> None:
    if not texts:
        raise ServingError("no query texts given")
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise ServingError(f"query texts must be non-empty strings; positions {empty[:5]} are not")


def _shallow_copy(catalog: ItemCatalog) -> ItemCatalog:
    """The catalogue with its own tensor dict, so a ``prepare`` adding tensors leaves the served one alone."""
    return ItemCatalog(tensors=dict(catalog.tensors), product_ids=catalog.product_ids, titles=catalog.titles,
                       texts=catalog.texts)


def _catalogue_dataset(products: pl.DataFrame, images: np.ndarray | None,
                       image_features: pl.DataFrame | None) -> ProductSearchDataset:
    """A dataset of ``products`` alone (one placeholder query, no judgments), checked as every dataset is."""
    products = products.with_columns(
        [pl.lit(None, dtype).alias(column) for column, dtype in SCHEMA["products"].items()
         if column not in products.columns and column not in ("product_id", "title")])
    queries = pl.DataFrame({"query_id": ["serve"], "query": ["serve"], "split": ["test"], "group": [None]},
                           schema=SCHEMA["queries"])
    judgments = pl.DataFrame(schema=SCHEMA["judgments"])
    return ProductSearchDataset(name="catalogue", products=products, queries=queries, judgments=judgments,
                                images=images, image_features=image_features, meta={})


def _align_categories(catalog: ItemCatalog, products: pl.DataFrame, trained: pl.DataFrame) -> None:
    """Categorical item ids as the training catalogue numbered them (first appearance, 1..k); unseen -> 0."""
    for name, column in CATEGORICAL_FIELDS.items():
        if name not in catalog.tensors:
            continue
        vocabulary: dict[str, int] = {"": 0}
        for value in trained[column].fill_null("").to_list():
            vocabulary.setdefault(value, len(vocabulary))
        ids = [vocabulary.get(value, 0) for value in products[column].fill_null("").to_list()]
        catalog.add(name, np.array(ids, dtype=np.int64))
