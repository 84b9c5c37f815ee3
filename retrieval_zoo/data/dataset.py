"""The canonical product-search dataset: the schema every loader and the simshop generator produce.

A dataset is a folder of parquet files (plus optional arrays) with a ``meta.json``:

==========================  ========  =====================================================================
file                        required  columns (polars dtypes)
==========================  ========  =====================================================================
``products.parquet``        yes       product_id Utf8 (unique), title Utf8 (non-empty), description Utf8,
                                      bullets Utf8, brand Utf8, color Utf8, category Utf8 ("top > ... > leaf",
                                      "" when unknown), shop_id Utf8 (nullable). Extra columns are kept.
``queries.parquet``         yes       query_id Utf8 (unique), query Utf8 (non-empty), split Utf8 in
                                      {train, valid, test}, group Utf8 (nullable: a query group that results
                                      are also reported for, e.g. simshop's "image_attr").
``judgments.parquet``       yes       query_id Utf8, product_id Utf8, label Utf8 in {E, S, C, I}.
                                      When ``meta["fully_judged"]`` is true a missing pair means I.
``searches.parquet``        no        search_id Utf8 (unique), query_id Utf8, user_id Utf8,
                                      timestamp Float64 (days), split Utf8. One row per issued search.
``interactions.parquet``    no        user_id Utf8, product_id Utf8, timestamp Float64 (days), action Utf8 in
                                      {exposure, click, order, collect}, search_id Utf8 (nullable),
                                      position Int32 (nullable, 0-based rank in the exposure list).
``users.parquet``           no        user_id Utf8 (unique) + free attribute columns.
``images.npy``              no        uint8 [n_products, H, W, 3], row-aligned with products.parquet.
``image_features.parquet``  no        product_id Utf8, features List(Float32) (precomputed, e.g. SQID CLIP).
==========================  ========  =====================================================================

Datasets with ``searches`` are evaluated per search (each has a user and a time); the others per query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

LABELS = ("E", "S", "C", "I")
SPLITS = ("train", "valid", "test")
ACTIONS = ("exposure", "click", "order", "collect")

SCHEMA: dict[str, dict[str, pl.DataType]] = {
    "products": {
        "product_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "bullets": pl.Utf8,
        "brand": pl.Utf8, "color": pl.Utf8, "category": pl.Utf8, "shop_id": pl.Utf8,
    },
    "queries": {"query_id": pl.Utf8, "query": pl.Utf8, "split": pl.Utf8, "group": pl.Utf8},
    "judgments": {"query_id": pl.Utf8, "product_id": pl.Utf8, "label": pl.Utf8},
    "searches": {
        "search_id": pl.Utf8, "query_id": pl.Utf8, "user_id": pl.Utf8, "timestamp": pl.Float64,
        "split": pl.Utf8,
    },
    "interactions": {
        "user_id": pl.Utf8, "product_id": pl.Utf8, "timestamp": pl.Float64, "action": pl.Utf8,
        "search_id": pl.Utf8, "position": pl.Int32,
    },
    "users": {"user_id": pl.Utf8},
    "image_features": {"product_id": pl.Utf8, "features": pl.List(pl.Float32)},
}
REQUIRED_TABLES = ("products", "queries", "judgments")
OPTIONAL_TABLES = ("searches", "interactions", "users", "image_features")


class DatasetError(ValueError):
    """A dataset that does not follow the canonical schema; the message says what is wrong and how to fix it."""


@dataclass
class ProductSearchDataset:
    """A product-search dataset in the canonical schema (see the module docstring)."""

    name: str
    products: pl.DataFrame
    queries: pl.DataFrame
    judgments: pl.DataFrame
    searches: pl.DataFrame | None = None
    interactions: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    images: np.ndarray | None = None
    image_features: pl.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    # -- what the data offers -------------------------------------------------------------
    @property
    def has_behaviour(self) -> bool:
        return self.searches is not None and self.interactions is not None

    def describe(self) -> str:
        parts = [f"{self.name}: {self.products.height:,} products", f"{self.queries.height:,} queries",
                 f"{self.judgments.height:,} judgments"]
        if self.searches is not None:
            parts.append(f"{self.searches.height:,} searches")
        if self.interactions is not None:
            parts.append(f"{self.interactions.height:,} interactions")
        return ", ".join(parts)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the canonical files; written to a temporary folder first, so a crash leaves nothing half-done."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for table in REQUIRED_TABLES + OPTIONAL_TABLES:
            frame = getattr(self, table)
            if frame is not None:
                frame.write_parquet(tmp / f"{table}.parquet")
        if self.images is not None:
            np.save(tmp / "images.npy", self.images)
        (tmp / "meta.json").write_text(json.dumps({"name": self.name, **self.meta}, indent=2, default=str))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ProductSearchDataset:
        folder = Path(folder)
        if not (folder / "meta.json").exists():
            raise DatasetError(f"{folder} is not a prepared dataset (no meta.json); prepare it first")
        meta = json.loads((folder / "meta.json").read_text())
        tables = {t: pl.read_parquet(folder / f"{t}.parquet") for t in REQUIRED_TABLES}
        for table in OPTIONAL_TABLES:
            path = folder / f"{table}.parquet"
            tables[table] = pl.read_parquet(path) if path.exists() else None
        images = np.load(folder / "images.npy") if (folder / "images.npy").exists() else None
        return cls(name=meta.pop("name"), images=images, meta=meta, **tables)


def validate(ds: ProductSearchDataset) -> None:
    """Check the canonical schema; raise DatasetError with a one-line message naming the problem."""
    for table in REQUIRED_TABLES + OPTIONAL_TABLES:
        frame = getattr(ds, table)
        if frame is None:
            continue
        for column, dtype in SCHEMA[table].items():
            if column not in frame.columns:
                raise DatasetError(f"{ds.name}: table '{table}' lacks column '{column}' (has {frame.columns})")
            if frame.schema[column] != dtype and frame[column].null_count() < frame.height:
                raise DatasetError(
                    f"{ds.name}: {table}.{column} has type {frame.schema[column]}, expected {dtype}"
                )
    _check_unique(ds, "products", "product_id")
    _check_unique(ds, "queries", "query_id")
    _check_values(ds, "queries", "split", SPLITS)
    _check_values(ds, "judgments", "label", LABELS)
    _check_non_empty(ds, "products", "title")
    _check_non_empty(ds, "queries", "query")
    unknown = ds.judgments.join(ds.products.select("product_id"), on="product_id", how="anti").height
    if unknown:
        raise DatasetError(f"{ds.name}: {unknown} judgments point at unknown product ids; drop or fix them")
    if ds.searches is not None:
        _check_unique(ds, "searches", "search_id")
        _check_values(ds, "searches", "split", SPLITS)
    if ds.interactions is not None:
        _check_values(ds, "interactions", "action", ACTIONS)
    if ds.images is not None and (ds.images.ndim != 4 or len(ds.images) != ds.products.height):
        raise DatasetError(
            f"{ds.name}: images.npy has shape {ds.images.shape}, expected [{ds.products.height}, H, W, 3]"
        )


def _check_unique(ds: ProductSearchDataset, table: str, column: str) -> None:
    frame = getattr(ds, table)
    duplicates = frame.height - frame[column].n_unique()
    if duplicates:
        raise DatasetError(f"{ds.name}: {duplicates} duplicate {column} values in '{table}'; ids must be unique")


def _check_values(ds: ProductSearchDataset, table: str, column: str, allowed: tuple[str, ...]) -> None:
    bad = set(getattr(ds, table)[column].unique().to_list()) - set(allowed)
    if bad:
        raise DatasetError(f"{ds.name}: {table}.{column} has values {sorted(map(str, bad))}; allowed: {allowed}")


def _check_non_empty(ds: ProductSearchDataset, table: str, column: str) -> None:
    empty = getattr(ds, table).filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")).height
    if empty:
        raise DatasetError(
            f"{ds.name}: {empty} rows of '{table}' have empty {column}; loaders must drop (and count) them"
        )
