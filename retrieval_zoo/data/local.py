"""Your own data: a folder of products / queries / judgments files with the canonical column names.

The layout is documented (with an example folder) in ``datasets/local/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from retrieval_zoo.data.checks import (
    INTEGER_TYPES,
    TEXT_TYPES,
    decode_csv_bytes,
    drop_blank,
    drop_duplicates,
    drop_unknown,
    parquet_schema,
    require_columns,
    require_data_file,
)
from retrieval_zoo.data.dataset import SPLITS, DatasetError, ProductSearchDataset

IDS = INTEGER_TYPES + TEXT_TYPES
REQUIRED = {
    "products": {"product_id": IDS, "title": TEXT_TYPES},
    "queries": {"query_id": IDS, "query": TEXT_TYPES, "split": TEXT_TYPES},
    "judgments": {"query_id": IDS, "product_id": IDS, "label": TEXT_TYPES + INTEGER_TYPES},
}
OPTIONAL_TEXT = {
    "products": {"description": "", "bullets": "", "brand": "", "color": "", "category": "", "shop_id": None},
    "queries": {"group": None},
}
LABEL_ALIASES = {
    "e": "E", "exact": "E", "3": "E",
    "s": "S", "substitute": "S", "2": "S",
    "c": "C", "complement": "C", "1": "C",
    "i": "I", "irrelevant": "I", "0": "I",
}
SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
                 "test": "test"}
LABEL_MAPPING = (
    "label as given: E/S/C/I (any case) or exact/substitute/complement/irrelevant, or graded 3/2/1/0 -> E/S/C/I; "
    "ESCI gains E=1, S=0.1, C=0.01, I=0 (stored 100/10/1/0)"
)


def load_local(path: str | Path, name: str | None = None) -> ProductSearchDataset:
    """Load ``products``, ``queries`` and ``judgments`` (each ``.parquet`` or ``.csv``) from a folder.

    Protocol: the splits are yours (column ``split``: train/valid/test; val/validation/dev mean valid); the
    catalogue is every product in the file. Mapping: see ``LABEL_MAPPING``; unjudged pairs are unknown
    (``fully_judged=False``) unless ``meta.json`` says otherwise. An optional ``meta.json`` in the folder is
    merged into ``meta`` (e.g. your own ``protocol`` line, ``fully_judged``).

    Ids may be integers (they become text); optional columns are filled (``""``, shop_id/group null); extra
    columns are kept. Bad rows are dropped and counted in ``meta["dropped"]``; undecodable CSV bytes are
    replaced and counted in ``meta["repaired"]``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"local dataset folder {folder} not found; see datasets/local/README.md for the layout")
    dropped: dict[str, int] = {}
    repaired: dict[str, int] = {}
    tables = {table: read_table(folder, table, repaired) for table in REQUIRED}
    products, queries, judgments = coerce(tables)
    products, queries, judgments = drop_bad_rows(products, queries, judgments, dropped)
    user_meta = read_user_meta(folder)
    dataset_name = name or user_meta.pop("name", None) or f"local-{folder.name}"
    meta = {
        "label_source": "labels",
        "fully_judged": False,
        "protocol": f"local folder {folder.name}: the file's own train/valid/test query split; catalogue = all "
                    f"{products.height:,} products in products file; labels as given",
        "label_mapping": LABEL_MAPPING,
        "dropped": dropped,
        "repaired": repaired,
        "source": str(folder.resolve()),
    } | user_meta
    return ProductSearchDataset(name=dataset_name, products=products, queries=queries, judgments=judgments,
                                meta=meta)


def read_table(folder: Path, table: str, repaired: dict[str, int]) -> pl.DataFrame:
    candidates = [folder / f"{table}.{ext}" for ext in ("parquet", "csv") if (folder / f"{table}.{ext}").exists()]
    if not candidates:
        raise DatasetError(f"{folder}: no {table}.parquet or {table}.csv (see datasets/local/README.md)")
    if len(candidates) > 1:
        raise DatasetError(f"{folder}: both {table}.parquet and {table}.csv exist; keep one")
    file = require_data_file(candidates[0], source_url="wherever you exported it", fix_hint="data repository")
    if file.suffix == ".parquet":
        schema = parquet_schema(file)
        require_columns(schema, REQUIRED[table], file=file.name)
        return pl.read_parquet(file)
    text, repaired[f"non_utf8_lines_{file.name}"] = decode_csv_bytes(file)
    # All columns as text: ids like "007" keep their zeros, and one odd value cannot break type inference.
    frame = pl.read_csv(text, infer_schema=False)
    require_columns(frame.schema, REQUIRED[table], file=file.name)
    return frame


def coerce(tables: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Canonical dtypes: ids and text as Utf8, labels and splits normalised, optional columns filled."""
    products = tables["products"].with_columns(
        pl.col("product_id").cast(pl.Utf8), pl.col("title").cast(pl.Utf8),
        *[_text_column(tables["products"], column, default) for column, default in OPTIONAL_TEXT["products"].items()],
    )
    queries = tables["queries"].with_columns(
        pl.col("query_id").cast(pl.Utf8), pl.col("query").cast(pl.Utf8),
        pl.col("split").cast(pl.Utf8).str.strip_chars().str.to_lowercase(),
        *[_text_column(tables["queries"], column, default) for column, default in OPTIONAL_TEXT["queries"].items()],
    )
    unknown = sorted(set(queries["split"].unique().to_list()) - set(SPLIT_ALIASES), key=str)
    if unknown:
        raise DatasetError(f"queries: unknown split values {unknown}; allowed: {SPLITS} (or val/validation/dev)")
    queries = queries.with_columns(pl.col("split").replace_strict(SPLIT_ALIASES))
    judgments = tables["judgments"].select(
        pl.col("query_id").cast(pl.Utf8), pl.col("product_id").cast(pl.Utf8),
        label=pl.col("label").cast(pl.Utf8).str.strip_chars().str.to_lowercase().replace_strict(
            LABEL_ALIASES, default=None, return_dtype=pl.Utf8),
    )
    return products, queries, judgments


def _text_column(frame: pl.DataFrame, column: str, default: str | None) -> pl.Expr:
    if column not in frame.columns:
        return pl.lit(default, dtype=pl.Utf8).alias(column)
    if not any(frame.schema[column] == t or isinstance(frame.schema[column], t) for t in TEXT_TYPES + IDS):
        raise DatasetError(f"column {column} has type {frame.schema[column]}; expected text")
    value = pl.col(column).cast(pl.Utf8)
    return (value.fill_null(default) if default is not None else value).alias(column)


def drop_bad_rows(
    products: pl.DataFrame, queries: pl.DataFrame, judgments: pl.DataFrame, dropped: dict[str, int]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    products, dropped["blank_title"] = drop_blank(products, "title")
    products, dropped["duplicate_product_id"] = drop_duplicates(products, "product_id")
    queries, dropped["blank_query"] = drop_blank(queries, "query")
    queries, dropped["duplicate_query_id"] = drop_duplicates(queries, "query_id")
    labelled = judgments.filter(pl.col("label").is_not_null())
    dropped["unknown_label"] = judgments.height - labelled.height
    judgments, dropped["duplicate_judgment"] = drop_duplicates(labelled, ["query_id", "product_id"])
    judgments, dropped["judgment_unknown_query"] = drop_unknown(judgments, "query_id", queries["query_id"])
    judgments, dropped["judgment_unknown_product"] = drop_unknown(judgments, "product_id", products["product_id"])
    queries, dropped["query_without_judgments"] = drop_unknown(queries, "query_id", judgments["query_id"].unique())
    return products, queries, judgments


def read_user_meta(folder: Path) -> dict:
    file = folder / "meta.json"
    if not file.is_file():
        return {}
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise DatasetError(f"{file}: expected a JSON object")
    return meta
