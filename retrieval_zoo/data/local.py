"""Your own data: a folder of products / queries / judgments files with the canonical column names.

The layout is documented (with an example folder) in ``datasets/local/README.md``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import polars as pl

from retrieval_zoo.data.checks import (
    INTEGER_TYPES,
    TEXT_TYPES,
    blank,
    decode_csv_bytes,
    drop_blank,
    drop_duplicates,
    drop_unknown,
    parquet_schema,
    require_columns,
    require_data_file,
)
from retrieval_zoo.data.dataset import LABELS, SPLITS, DatasetError, ProductSearchDataset

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
# meta.json "label_scale": a name below, or a mapping {label as written: E/S/C/I} (keys compared trimmed and
# lower-cased). Metrics use the ESCI gains, so a graded scale is folded onto E/S/C/I.
LABEL_SCALES = {
    "esci": LABEL_ALIASES,
    "0-4": {"4": "E", "3": "E", "2": "S", "1": "C", "0": "I"},
    "0-1": {"1": "E", "0": "I"},
}
SCALES_HELP = (
    '"esci" (default) = E/S/C/I (any case), exact/substitute/complement/irrelevant, 3/2/1/0; '
    '"0-4" = 4,3->E 2->S 1->C 0->I; "0-1" = 1->E 0->I; or a mapping such as '
    '{"label_scale": {"4": "E", "3": "E", "2": "S", "1": "C", "0": "I"}}'
)
SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
                 "test": "test"}
LABEL_MAPPING = (
    "label as given: E/S/C/I (any case) or exact/substitute/complement/irrelevant, or graded 3/2/1/0 -> E/S/C/I; "
    "ESCI gains E=1, S=0.1, C=0.01, I=0 (stored 100/10/1/0)"
)
GAINS = "ESCI gains E=1, S=0.1, C=0.01, I=0 (stored 100/10/1/0)"
# meta.json keys the code reads, with the JSON type each must have (bool is not accepted as a number).
META_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a string"),
    "protocol": ((str,), "a string"),
    "label_source": ((str,), "a string"),
    "label_mapping": ((str,), "a string"),
    "fully_judged": ((bool,), "a JSON boolean (true or false, without quotes)"),
    "label_scale": ((str, dict), f"one of {', '.join(map(json.dumps, LABEL_SCALES))} or an object such as "
                                 '{"4": "E", "3": "E", "2": "S", "1": "C", "0": "I"}'),
    "cv_folds": ((int,), "an integer >= 2 (with a fold column 0..cv_folds-1 in queries)"),
    "eval_protocols": ((list,), 'a list of "full" / "rerank", e.g. ["full", "rerank"]'),
}
LOADER_KEYS = ("dropped", "repaired", "source")  # set by the loader; a copied meta.json's values are replaced
# meta["dropped"] key -> (table, reason) for the printed summary.
DROP_REASONS = {
    "judgment_blank_id": ("judgment", "blank id"),
    "blank_label": ("judgment", "blank label"),
    "duplicate_judgment": ("judgment", "duplicate pair"),
    "judgment_unknown_query": ("judgment", "unknown query"),
    "judgment_unknown_product": ("judgment", "unknown product"),
    "blank_product_id": ("product", "blank id"),
    "blank_title": ("product", "blank title"),
    "duplicate_product_id": ("product", "duplicate id"),
    "blank_query_id": ("query", "blank id"),
    "blank_query": ("query", "blank query"),
    "duplicate_query_id": ("query", "duplicate id"),
    "query_without_judgments": ("query", "no judgments"),
}
TRIMMED_IDS = {"trimmed_id_products": "product", "trimmed_id_queries": "query", "trimmed_id_judgments": "judgment"}
PLURAL = {"test query": "test queries", "judgment": "judgments", "product": "products", "query": "queries", "label": "labels", "line": "lines"}


def load_local(path: str | Path, name: str | None = None) -> ProductSearchDataset:
    """Load ``products``, ``queries`` and ``judgments`` (each ``.parquet`` or ``.csv``) from a folder.

    Protocol: the splits are yours (column ``split``: train/valid/test; val/validation/dev mean valid); the
    catalogue is every product in the file. Labels: ``meta.json``'s ``label_scale`` (default ``"esci"``, see
    ``LABEL_SCALES``); a label outside the scale is an error. Unjudged pairs are unknown (``fully_judged=False``)
    unless ``meta.json`` says otherwise. An optional ``meta.json`` in the folder is merged into ``meta`` (e.g.
    your own ``protocol`` line, ``fully_judged``); the keys the code reads are type-checked (``META_TYPES``).

    Ids may be integers (they become text) and are trimmed; optional columns are filled (``""``, shop_id/group
    null); extra columns are kept. Bad rows (blank ids, titles, queries or labels, duplicates, dangling
    judgments) are dropped and counted in ``meta["dropped"]``; trimmed ids/labels and undecodable CSV bytes are
    counted in ``meta["repaired"]``; both are printed as one summary line. A load that leaves no judgment, no
    test query or no relevant test judgment is an error naming the counts.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"local dataset folder {folder} not found; see datasets/local/README.md for the layout")
    user_meta = read_user_meta(folder)
    scale = user_meta.get("label_scale", "esci")
    aliases = label_aliases(scale)
    dropped: dict[str, int] = {}
    repaired: dict[str, int] = {}
    files: dict[str, Path] = {}
    tables = {table: read_table(folder, table, repaired, files) for table in REQUIRED}
    products, queries, judgments = coerce(tables, aliases, repaired, files, scale)
    test_queries_in_file = int((queries["split"] == "test").sum())
    products, queries, judgments = drop_bad_rows(products, queries, judgments, dropped)
    cv_folds = user_meta.get("cv_folds")
    if cv_folds:
        queries = with_folds(queries, cv_folds, files["queries"].name)
    require_usable(queries, judgments, dropped, files, tables["judgments"].height, test_queries_in_file,
                   check_test=not cv_folds)
    dataset_name = name or user_meta.pop("name", None) or f"local-{folder.name}"
    meta = {
        "label_source": "labels",
        "fully_judged": False,
        "protocol": f"local folder {folder.name}: the file's own train/valid/test query split; catalogue = all "
                    f"{products.height:,} products in products file; labels as given",
        "label_mapping": LABEL_MAPPING if scale == "esci" else
        f"label_scale {json.dumps(scale)}: {', '.join(f'{k}->{v}' for k, v in aliases.items())}; {GAINS}",
    } | user_meta | {
        "dropped": dropped,
        "repaired": repaired,
        "source": str(folder.resolve()),
    }
    dataset = ProductSearchDataset(name=dataset_name, products=products, queries=queries, judgments=judgments,
                                   meta=meta)
    summary = load_summary(dropped, repaired)
    if summary:
        print(f"local:path={path}: {summary}", flush=True)
    return dataset


# -- meta.json ----------------------------------------------------------------------------------------------
def read_json_object(file: Path, example: str = "") -> dict:
    """A folder's optional JSON object file (meta.json): {} when absent, a one-line error when not an object."""
    if not file.is_file():
        return {}
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{file}: not valid JSON ({_one_line(error)}); fix the file") from error
    if not isinstance(meta, dict):
        raise DatasetError(f"{file}: expected a JSON object{example}, found {_json_type(meta)}")
    return meta


def read_user_meta(folder: Path) -> dict:
    file = folder / "meta.json"
    meta = read_json_object(file)
    for key, (types, expected) in META_TYPES.items():
        if key not in meta:
            continue
        value = meta[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise DatasetError(f"{file}: \"{key}\" is {_json(value)} ({_json_type(value)}); expected {expected}")
    if "cv_folds" in meta and meta["cv_folds"] < 2:
        raise DatasetError(f"{file}: \"cv_folds\" is {meta['cv_folds']}; expected an integer >= 2")
    bad = [p for p in meta.get("eval_protocols", []) if p not in ("full", "rerank")]
    if bad:
        raise DatasetError(f"{file}: \"eval_protocols\" has {_json(bad)}; expected a list of \"full\" / \"rerank\"")
    if isinstance(meta.get("label_scale"), str) and meta["label_scale"].strip().lower() not in LABEL_SCALES:
        raise DatasetError(f"{file}: \"label_scale\" is {_json(meta['label_scale'])}; expected {SCALES_HELP}")
    return meta


def label_aliases(scale: str | dict) -> dict[str, str]:
    """{label as written, trimmed and lower-cased: E/S/C/I} for a ``label_scale`` (checked by read_user_meta)."""
    if isinstance(scale, str):
        return LABEL_SCALES[scale.strip().lower()]
    if not scale:
        raise DatasetError(f"meta.json: \"label_scale\" is an empty object; expected {SCALES_HELP}")
    aliases = {}
    for label, grade in scale.items():
        if not isinstance(grade, str) or grade.strip().upper() not in LABELS:
            raise DatasetError(f"meta.json: \"label_scale\" maps {_json(label)} to {_json(grade)}; "
                               f"each label must map to one of \"E\", \"S\", \"C\", \"I\"")
        aliases[label.strip().lower()] = grade.strip().upper()
    return aliases


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (str, "a string"), (int, "an integer"), (float, "a number"),
                       (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _one_line(error: Exception | str) -> str:
    return " ".join(str(error).split())


# -- files ---------------------------------------------------------------------------------------------------
def read_table(folder: Path, table: str, repaired: dict[str, int], files: dict[str, Path]) -> pl.DataFrame:
    candidates = [folder / f"{table}.{ext}" for ext in ("parquet", "csv") if (folder / f"{table}.{ext}").exists()]
    if not candidates:
        raise DatasetError(f"{folder}: no {table}.parquet or {table}.csv (see datasets/local/README.md)")
    if len(candidates) > 1:
        raise DatasetError(f"{folder}: both {table}.parquet and {table}.csv exist; keep one")
    file = require_data_file(candidates[0], source_url="wherever you exported it", fix_hint="data repository")
    files[table] = file
    if file.suffix == ".parquet":
        schema = parquet_schema(file)
        require_columns(schema, REQUIRED[table], file=file.name)
        return pl.read_parquet(file)
    text, repaired[f"non_utf8_lines_{file.name}"] = decode_csv_bytes(file)
    frame = read_csv_text(text, file)
    require_columns(frame.schema, REQUIRED[table], file=file.name)
    return frame


def read_csv_text(text: bytes, file: Path) -> pl.DataFrame:
    """The CSV as text columns ("007" keeps its zeros; one odd value cannot break type inference), without the
    all-empty rows of blank lines; a parse error names the file and, where a re-scan finds it, the line."""
    try:
        frame = pl.read_csv(text, infer_schema=False)
    except pl.exceptions.NoDataError as error:
        raise DatasetError(f"{file}: empty file; it needs a header row with the column names "
                           f"(see datasets/local/README.md)") from error
    except pl.exceptions.PolarsError as error:
        where = locate_csv_problem(text) or f"polars: {_one_line(str(error).split(chr(10))[0])}"
        raise DatasetError(f"{file}: cannot parse the CSV ({where}); fix that line (quote fields that contain "
                           f"commas or line breaks, double quotes inside quoted fields as \"\") or export it again"
                           ) from error
    return frame.filter(~pl.all_horizontal(pl.all().is_null())) if frame.width else frame


def locate_csv_problem(text: bytes) -> str | None:
    """Re-scan a CSV that polars refused with Python's csv module: the line of the first unclosed quote,
    stray quote or row with more fields than the header; None when it finds nothing."""
    limit = csv.field_size_limit()
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO(text.decode("utf-8", errors="replace"), newline=""), strict=True)
    start, width = 1, None
    try:
        for row in reader:
            if width is None:
                width = len(row)
            elif len(row) > width:
                return f"line {start}: {len(row)} fields, the header has {width}"
            start = reader.line_num + 1
    except csv.Error as error:
        if "end of data" in str(error):
            return f"line {start}: a quoted field opened on this line is never closed"
        return f"line {start}: {_one_line(error)}"
    finally:
        csv.field_size_limit(limit)
    return None


# -- canonical columns --------------------------------------------------------------------------------------
def coerce(tables: dict[str, pl.DataFrame], aliases: dict[str, str], repaired: dict[str, int],
           files: dict[str, Path], scale: str | dict = "esci") -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Canonical dtypes: ids (trimmed) and text as Utf8, labels and splits normalised, optional columns filled."""
    products = trim_ids(tables["products"], ["product_id"], repaired, "trimmed_id_products").with_columns(
        pl.col("title").cast(pl.Utf8),
        *[_text_column(tables["products"], column, default) for column, default in OPTIONAL_TEXT["products"].items()],
    )
    queries = trim_ids(tables["queries"], ["query_id"], repaired, "trimmed_id_queries").with_columns(
        pl.col("query").cast(pl.Utf8),
        pl.col("split").cast(pl.Utf8).str.strip_chars().str.to_lowercase(),
        *[_text_column(tables["queries"], column, default) for column, default in OPTIONAL_TEXT["queries"].items()],
    )
    unknown = sorted(set(queries["split"].unique().to_list()) - set(SPLIT_ALIASES), key=str)
    if unknown:
        raise DatasetError(f"{files['queries'].name}: unknown split values {unknown}; allowed: {SPLITS} "
                           f"(or val/validation/dev)")
    queries = queries.with_columns(pl.col("split").replace_strict(SPLIT_ALIASES))
    judgments = trim_ids(tables["judgments"].select("query_id", "product_id", "label"), ["query_id", "product_id"],
                         repaired, "trimmed_id_judgments")
    raw_label = pl.col("label").cast(pl.Utf8)
    repaired["trimmed_label"] = judgments.select(
        (raw_label != raw_label.str.strip_chars()).fill_null(False).sum()).item()
    judgments = judgments.with_columns(label=raw_label.str.strip_chars())
    labels = judgments.filter(~blank("label"))["label"]
    unknown_labels = labels.filter(~labels.str.to_lowercase().is_in(list(aliases)))
    if unknown_labels.len():
        found = labels.value_counts(sort=True)
        shown = ", ".join(f"{value!r} x{count}" for value, count in found.head(20).iter_rows())
        raise DatasetError(
            f"{files['judgments'].name}: {_count(unknown_labels.len(), 'judgment')} with a label outside label_scale "
            f"{_json(scale)} ({sorted(set(unknown_labels.head(10_000).to_list()))[:10]}); labels found: {shown}"
            f"{' ...' if found.height > 20 else ''}; accepted scales: {SCALES_HELP}; set \"label_scale\" in "
            f"meta.json (see datasets/local/README.md)")
    judgments = judgments.with_columns(label=pl.when(blank("label")).then(None).otherwise(
        pl.col("label").str.to_lowercase().replace_strict(aliases, default=None, return_dtype=pl.Utf8)))
    return products, queries, judgments


def trim_ids(frame: pl.DataFrame, columns: list[str], repaired: dict[str, int], key: str) -> pl.DataFrame:
    """Id columns as trimmed text, blank -> null (dropped later as blank ids); rows whose ids were trimmed to
    something non-blank are counted in ``repaired[key]``."""
    frame = frame.with_columns(pl.col(c).cast(pl.Utf8) for c in columns)
    changed = pl.any_horizontal(
        ((pl.col(c) != pl.col(c).str.strip_chars()) & (pl.col(c).str.strip_chars() != "")).fill_null(False)
        for c in columns)
    repaired[key] = frame.select(changed.sum()).item()
    trimmed = [pl.col(c).str.strip_chars() for c in columns]
    return frame.with_columns(pl.when(t == "").then(None).otherwise(t).alias(c) for c, t in zip(columns, trimmed, strict=True))


def _text_column(frame: pl.DataFrame, column: str, default: str | None) -> pl.Expr:
    if column not in frame.columns:
        return pl.lit(default, dtype=pl.Utf8).alias(column)
    if not any(frame.schema[column] == t or isinstance(frame.schema[column], t) for t in TEXT_TYPES + IDS):
        raise DatasetError(f"column {column} has type {frame.schema[column]}; expected text")
    value = pl.col(column).cast(pl.Utf8)
    return (value.fill_null(default) if default is not None else value).alias(column)


def with_folds(queries: pl.DataFrame, folds: int, file: str) -> pl.DataFrame:
    """meta.json's cv_folds needs a queries column ``fold`` with integers 0..folds-1."""
    if "fold" not in queries.columns:
        raise DatasetError(f"{file}: meta.json sets cv_folds={folds} but there is no fold column; add one "
                           f"(0..{folds - 1}) or remove cv_folds")
    fold = queries["fold"].cast(pl.Int64, strict=False)
    if fold.null_count() or not fold.is_between(0, folds - 1).all():
        raise DatasetError(f"{file}: column fold must hold integers 0..{folds - 1} (meta.json cv_folds={folds}); "
                           f"found {_json(sorted(set(map(str, queries['fold'].unique().to_list())))[:10])}")
    return queries.with_columns(fold=fold)


# -- bad rows -----------------------------------------------------------------------------------------------
def drop_blank_and_duplicate_rows(products: pl.DataFrame, queries: pl.DataFrame, judgments: pl.DataFrame,
                                  dropped: dict[str, int]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Rows with a blank id, title, query or label, and repeated product or query ids, dropped and counted in
    ``dropped`` (the keys the printed summary names); shared by the local and BEIR loaders."""
    products, dropped["blank_product_id"] = drop_blank(products, "product_id")
    products, dropped["blank_title"] = drop_blank(products, "title")
    products, dropped["duplicate_product_id"] = drop_duplicates(products, "product_id")
    queries, dropped["blank_query_id"] = drop_blank(queries, "query_id")
    queries, dropped["blank_query"] = drop_blank(queries, "query")
    queries, dropped["duplicate_query_id"] = drop_duplicates(queries, "query_id")
    kept = judgments.filter(~blank("query_id") & ~blank("product_id"))
    dropped["judgment_blank_id"] = judgments.height - kept.height
    judgments, dropped["blank_label"] = drop_blank(kept, "label")
    return products, queries, judgments


def drop_bad_rows(
    products: pl.DataFrame, queries: pl.DataFrame, judgments: pl.DataFrame, dropped: dict[str, int]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    products, queries, judgments = drop_blank_and_duplicate_rows(products, queries, judgments, dropped)
    judgments, dropped["duplicate_judgment"] = drop_duplicates(judgments, ["query_id", "product_id"])
    judgments, dropped["judgment_unknown_query"] = drop_unknown(judgments, "query_id", queries["query_id"])
    judgments, dropped["judgment_unknown_product"] = drop_unknown(judgments, "product_id", products["product_id"])
    queries, dropped["query_without_judgments"] = drop_unknown(queries, "query_id", judgments["query_id"].unique())
    return products, queries, judgments


def require_usable(queries: pl.DataFrame, judgments: pl.DataFrame, dropped: dict[str, int],
                   files: dict[str, Path], judgments_in_file: int, test_queries_in_file: int, *,
                   check_test: bool = True) -> None:
    """An error now, with the counts, rather than a crash or an empty result row later in the run."""
    judgment_file, query_file = files["judgments"].name, files["queries"].name
    if judgments.is_empty():
        if not judgments_in_file:
            raise DatasetError(f"no judgment: {judgment_file} has no rows; add query_id,product_id,label rows")
        raise DatasetError(
            f"no judgment left: all {judgments_in_file} rows of {judgment_file} were dropped "
            f"({_reasons(dropped, 'judgment')}); check that its query_id/product_id values match "
            f"{query_file} and {files['products'].name}")
    if not check_test:
        return
    test = queries.filter(pl.col("split") == "test")
    if test.is_empty():
        raise DatasetError(
            f"no test query left: {query_file} has {_count(test_queries_in_file, 'test query')}; dropped queries: "
            f"{_reasons(dropped, 'query') or 'none'}; dropped judgments: {_reasons(dropped, 'judgment') or 'none'}; "
            f"give some judged queries split=test")
    test_judgments = judgments.join(test.select("query_id"), on="query_id", how="semi")
    if not (test_judgments["label"] != "I").any():
        raise DatasetError(
            f"no test query has a relevant judgment: {_count(test.height, 'test query')}, "
            f"{_count(test_judgments.height, 'judgment')}, "
            f"all I (irrelevant); metrics would be undefined: add E/S/C judgments for the test queries in "
            f"{judgment_file} or check \"label_scale\" in meta.json")


def _reasons(dropped: dict[str, int], table: str, *, bare_single: bool = False) -> str:
    """"2 unknown product, 1 blank id" (most first); with ``bare_single`` a lone reason without its count."""
    counts = sorted(((dropped[key], reason) for key, (kind, reason) in DROP_REASONS.items()
                     if kind == table and dropped.get(key)), key=lambda item: -item[0])
    if bare_single and len(counts) == 1:
        return counts[0][1]
    return ", ".join(f"{n} {reason}" for n, reason in counts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun if n == 1 else PLURAL.get(noun, noun + 's')}"


def load_summary(dropped: dict[str, int], repaired: dict[str, int]) -> str:
    """One line: what was dropped (per table, per reason) and repaired; "" when nothing was."""
    drops = []
    for table in ("judgment", "product", "query"):
        total = sum(dropped.get(key, 0) for key, (kind, _) in DROP_REASONS.items() if kind == table)
        if total:
            drops.append(f"{_count(total, table)} ({_reasons(dropped, table, bare_single=True)})")
    repairs = []
    for key, n in repaired.items():
        if not n:
            continue
        if key == "trimmed_label":
            repairs.append(f"{_count(n, 'label')} (trimmed)")
        elif key in TRIMMED_IDS:
            repairs.append(f"{_count(n, TRIMMED_IDS[key])} (id trimmed)")
        elif key.startswith("non_utf8_lines_"):
            repairs.append(f"{_count(n, 'line')} of {key.removeprefix('non_utf8_lines_')} (non-UTF-8 bytes replaced)")
        else:
            repairs.append(f"{n} {key}")
    parts = [f"dropped {', '.join(drops)}"] if drops else []
    if repairs:
        parts.append(f"repaired {', '.join(repairs)}")
    return "; ".join(parts)
