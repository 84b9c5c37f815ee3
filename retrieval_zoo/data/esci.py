"""Amazon ESCI (Shopping Queries Dataset, Apache-2.0) from its two official parquet files.

Files (``amazon-science/esci-data``, folder ``shopping_queries_dataset/``, stored with Git LFS):

- ``shopping_queries_dataset_examples.parquet``: example_id, query, query_id, product_id, product_locale,
  esci_label (E/S/C/I), small_version, large_version, split (train/test).
- ``shopping_queries_dataset_products.parquet``: product_id, product_title, product_description,
  product_bullet_point, product_brand, product_color, product_locale (key: product_locale + product_id).

The products file is ~1.1 GB (likely a single row group): it is streamed page by page, only the needed columns,
filtered to one locale and cleaned batch by batch (see ``read_esci_products``), so that the full US catalogue
(~1.2M products) builds in about twice the memory of the result (benchmarks/esci_scale.py).
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import polars as pl

from retrieval_zoo.data import registry
from retrieval_zoo.data.checks import (
    INTEGER_TYPES,
    TEXT_TYPES,
    as_bool,
    as_choice,
    as_float,
    drop_blank,
    drop_duplicates,
    drop_not_in,
    drop_unknown,
    fingerprint,
    is_utf8_error,
    iter_parquet_batches,
    load_or_build,
    parquet_schema,
    read_parquet_repairing_utf8,
    release_arrow_memory,
    require_columns,
    require_data_file,
    sums_file_for,
    unit_hashes,
    verify_sha256,
)
from retrieval_zoo.data.dataset import LABELS, DatasetError, ProductSearchDataset

EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
SOURCES_FILE = "shopping_queries_dataset_sources.csv"
ESCI_URL = "https://github.com/amazon-science/esci-data/tree/main/shopping_queries_dataset"
# GitHub serves LFS objects from media.githubusercontent.com; raw.githubusercontent.com gives the pointer.
DOWNLOAD_URLS = {
    EXAMPLES_FILE: f"https://media.githubusercontent.com/media/amazon-science/esci-data/main/shopping_queries_dataset/{EXAMPLES_FILE}",
    PRODUCTS_FILE: f"https://media.githubusercontent.com/media/amazon-science/esci-data/main/shopping_queries_dataset/{PRODUCTS_FILE}",
}
LOCALES = ("us", "es", "jp")
VERSION_COLUMNS = {"small": "small_version", "large": "large_version"}
CATALOGUES = ("locale", "judged")
OFFICIAL_SPLITS = ("train", "test")
# ESCI task-1 gains E=1, S=0.1, C=0.01, I=0, scaled to integers for ranx (NDCG is unchanged by a common scale).
GAINS = {"E": 100, "S": 10, "C": 1, "I": 0}
LABEL_MAPPING = (
    "esci_label used as is (E/S/C/I); gains E=1, S=0.1, C=0.01, I=0 stored as 100/10/1/0 (the ESCI paper's "
    "convention; the official ranking/prepare_trec_eval_files.py swaps S and C, giving S=0.01, C=0.1)"
)
# Bump when the preparation changes, so that cached prepared datasets are rebuilt.
PREPARATION_VERSION = 1

EXAMPLES_COLUMNS = {
    "query": TEXT_TYPES, "query_id": INTEGER_TYPES + TEXT_TYPES, "product_id": TEXT_TYPES,
    "product_locale": TEXT_TYPES, "esci_label": TEXT_TYPES, "small_version": INTEGER_TYPES,
    "large_version": INTEGER_TYPES, "split": TEXT_TYPES,
}
PRODUCTS_COLUMNS = {
    "product_id": TEXT_TYPES, "product_title": TEXT_TYPES, "product_description": TEXT_TYPES,
    "product_bullet_point": TEXT_TYPES, "product_brand": TEXT_TYPES, "product_color": TEXT_TYPES,
    "product_locale": TEXT_TYPES,
}

_HTML_TAG = r"(?s)<!--.*?-->|</?[A-Za-z][^<>]*>"  # a tag starts with a letter: "size < 5 > 3" survives
_HTML_ENTITY = r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);"
_COMMON_ENTITIES = {"&amp;": "&", "&nbsp;": " ", "&quot;": '"', "&#39;": "'", "&lt;": "<", "&gt;": ">"}


def load_esci(
    path: str | Path | None = None,
    locale: str = "us",
    version: str = "small",
    catalogue: str = "locale",
    valid_fraction: float | str = 0.05,
    cache: bool | str = True,
) -> ProductSearchDataset:
    """Load ESCI for one locale in the canonical schema (cached after the first build).

    Protocol: the ``version`` subset (``small`` = task 1, ``small_version == 1``; ``large`` = tasks 2/3), the
    official train/test split by query, and a validation split carved out of the train queries: a query is
    ``valid`` when sha256(query_id) maps below ``valid_fraction`` (5%), so the carve is identical everywhere.
    The catalogue is every product of the locale (``catalogue="locale"``, ~1.2M for US: full-catalogue
    retrieval) or only the products judged in the chosen version (``"judged"``). Evaluate either over the
    full catalogue or by re-ranking each query's judged candidates (``meta["eval_protocols"]``).

    Mapping: esci_label E/S/C/I as is, gains E=1, S=0.1, C=0.01, I=0 (stored 100/10/1/0); unjudged pairs are
    unknown, not irrelevant (``fully_judged=False``). Descriptions and bullets are stripped of HTML; titles are
    kept; there is no category (``""``) and no shop (null).

    ``path`` is the folder holding the two official files (default: ``$RETRIEVAL_ZOO_ESCI_DIR`` or
    ``<cache>/esci/raw``); they are checked against ``<path>/SHA256SUMS`` if present, else against the
    repository's ``datasets/esci/SHA256SUMS``. Parameters may be strings (from the CLI).
    """
    options = _esci_options(locale, version, catalogue, valid_fraction)
    raw = esci_raw_dir(path)
    files = check_esci_files(raw)
    sums = verify_sha256(files.values(), sums_file_for(raw, "esci"), dataset="esci")
    key = fingerprint(PREPARATION_VERSION, sums, options)
    folder = registry.cache_dir() / "esci" / "prepared" / f"{options['locale']}-{options['version']}-{key}"
    return load_or_build(folder, lambda: build_esci(files, **options, sums=sums), enabled=as_bool(cache, "cache"))


def esci_raw_dir(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    return registry.path_from_env("RETRIEVAL_ZOO_ESCI_DIR", lambda: registry.cache_dir() / "esci" / "raw")


def check_esci_files(raw: Path) -> dict[str, Path]:
    """The two official files, present, not Git LFS pointers, with the expected columns and types."""
    files = {}
    for name, expected in ((EXAMPLES_FILE, EXAMPLES_COLUMNS), (PRODUCTS_FILE, PRODUCTS_COLUMNS)):
        file = require_data_file(Path(raw) / name, source_url=DOWNLOAD_URLS[name], fix_hint="esci-data")
        require_columns(parquet_schema(file), expected, file=name)
        files[name] = file
    return files


def build_esci(
    files: dict[str, Path], *, locale: str, version: str, catalogue: str, valid_fraction: float,
    sums: dict[str, str] | None = None,
) -> ProductSearchDataset:
    dropped: dict[str, int] = {}
    repaired: dict[str, int] = {}
    judgments = read_esci_judgments(files[EXAMPLES_FILE], locale, version, dropped=dropped, repaired=repaired)
    queries = official_queries(judgments, valid_fraction)
    judged_ids = judgments["product_id"].unique() if catalogue == "judged" else None
    products = read_esci_products(
        files[PRODUCTS_FILE], locale, only_ids=judged_ids, dropped=dropped, repaired=repaired
    )
    queries, judgments = finish_judgments(queries, judgments, products, dropped)
    protocol = (
        f"ESCI {locale} {version} version ({VERSION_COLUMNS[version]}==1): official train/test split by query, "
        f"valid = {valid_fraction:.0%} of train queries by sha256(query_id); labels esci_label E/S/C/I; "
        f"catalogue = {'all ' + locale + ' products' if catalogue == 'locale' else 'judged products'} "
        f"({products.height:,})"
    )
    meta = esci_meta(protocol, dropped, repaired, sums) | {"locale": locale, "version": version,
                                                             "catalogue": catalogue}
    return ProductSearchDataset(name="esci", products=products, queries=queries, judgments=judgments, meta=meta)


def esci_meta(
    protocol: str, dropped: dict[str, int], repaired: dict[str, int], sums: dict[str, str] | None
) -> dict:
    return {
        "label_source": "labels",
        "fully_judged": False,
        "protocol": protocol,
        "label_mapping": LABEL_MAPPING,
        "gains": GAINS,
        "eval_protocols": ["full", "rerank"],
        "dropped": dropped,
        "repaired": repaired,
        "source_sha256": sums or {},
    }


# -- judgments and queries --------------------------------------------------------------------------------
def read_esci_judgments(
    examples_file: Path, locale: str, version: str, *, dropped: dict[str, int], repaired: dict[str, int],
    extra_filter: pl.Expr | None = None,
) -> pl.DataFrame:
    """The locale's judgments of one version: query_id (str), query, product_id, label, official_split.

    ``dropped`` / ``repaired`` receive the counts of dropped rows and of non-UTF-8 values decoded with
    replacement."""
    row_filter = (pl.col("product_locale").cast(pl.Utf8) == locale) & (pl.col(VERSION_COLUMNS[version]) == 1)
    if extra_filter is not None:
        row_filter &= extra_filter
    columns = ["query_id", "query", "product_id", "esci_label", "split", "product_locale", VERSION_COLUMNS[version]]
    try:
        frame = pl.scan_parquet(examples_file).select(columns).filter(row_filter).collect()
        repaired["non_utf8_examples_values"] = 0
    except pl.exceptions.ComputeError as error:
        if not is_utf8_error(error):
            raise
        frame, repaired["non_utf8_examples_values"] = read_parquet_repairing_utf8(examples_file, columns, row_filter)
    frame = frame.select(
        pl.col("query_id").cast(pl.Utf8), pl.col("query").cast(pl.Utf8), pl.col("product_id").cast(pl.Utf8),
        label=pl.col("esci_label").cast(pl.Utf8).str.strip_chars().str.to_uppercase(),
        official_split=pl.col("split").cast(pl.Utf8).str.strip_chars().str.to_lowercase(),
    )
    if frame.is_empty():
        raise DatasetError(f"{examples_file.name}: no judgments for locale '{locale}' in the {version} version")
    unknown_splits = sorted(set(frame["official_split"].unique().drop_nulls()) - set(OFFICIAL_SPLITS))
    if unknown_splits or frame["official_split"].null_count():
        raise DatasetError(
            f"{examples_file.name}: split has values {unknown_splits or [None]}; expected {list(OFFICIAL_SPLITS)}"
        )
    frame, dropped["unknown_label"] = drop_not_in(frame, "label", LABELS)
    frame, dropped["duplicate_judgment"] = drop_duplicates(frame, ["query_id", "product_id"])
    return frame


def official_queries(judgments: pl.DataFrame, valid_fraction: float) -> pl.DataFrame:
    """One row per query: its text and split, with ``valid`` carved from train by a hash of the query_id."""
    queries = judgments.group_by("query_id", maintain_order=True).agg(
        pl.col("query").first(), pl.col("official_split").first()
    )
    in_valid = unit_hashes(queries["query_id"]) < valid_fraction
    return queries.with_columns(
        split=pl.when((pl.col("official_split") == "train") & in_valid).then(pl.lit("valid"))
        .otherwise(pl.col("official_split")),
        group=pl.lit(None, dtype=pl.Utf8),
    ).select("query_id", "query", "split", "group")


def finish_judgments(
    queries: pl.DataFrame, judgments: pl.DataFrame, products: pl.DataFrame, dropped: dict[str, int]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop (and count) blank queries, judgments of dropped queries or unknown products, and queries left
    without any judgment (they cannot be evaluated)."""
    queries, dropped["blank_query"] = drop_blank(queries, "query")
    judgments = judgments.select("query_id", "product_id", "label")
    judgments, dropped["judgment_of_blank_query"] = drop_unknown(judgments, "query_id", queries["query_id"])
    judgments, dropped["judgment_unknown_product"] = drop_unknown(judgments, "product_id", products["product_id"])
    queries, dropped["query_without_judgments"] = drop_unknown(queries, "query_id", judgments["query_id"].unique())
    return queries, judgments


# -- products ---------------------------------------------------------------------------------------------
def read_esci_products(
    products_file: Path, locale: str, *, only_ids: pl.Series | None, dropped: dict[str, int],
    repaired: dict[str, int],
) -> pl.DataFrame:
    """The locale's catalogue (or its ``only_ids`` products) in the canonical products schema.

    Rows with a blank title are dropped; of duplicate product ids the first in file order is kept.

    Memory: the official file is ~1.1 GB, probably one row group, which polars decodes whole. So the file is
    streamed page by page (pyarrow), each batch is filtered to the locale, cleaned and written to a temporary
    parquet, and the cleaned catalogue is read back once at the end: the peak stays near the size of the
    result instead of raw + cleaned text plus the allocator's garbage from the cleaning.
    """
    row_filter = pl.col("product_locale").cast(pl.Utf8) == locale
    if only_ids is not None:
        row_filter &= pl.col("product_id").cast(pl.Utf8).is_in(only_ids.implode())
    batch_repairs: dict[str, int] = {}
    seen_ids = pl.Series("product_id", [], dtype=pl.Utf8)
    dropped["blank_title"] = dropped["duplicate_product_id"] = 0
    with tempfile.TemporaryDirectory(prefix="esci-products-", dir=registry.cache_dir()) as tmp:
        parts = []
        for batch in iter_parquet_batches(products_file, list(PRODUCTS_COLUMNS), batch_repairs):
            batch, n_blank = drop_blank(batch.filter(row_filter), "product_title")
            batch, n_repeated = drop_repeated_ids(batch, seen_ids)
            dropped["blank_title"] += n_blank
            dropped["duplicate_product_id"] += n_repeated
            if batch.is_empty():
                continue
            seen_ids = pl.concat([seen_ids, batch["product_id"].cast(pl.Utf8)])
            parts.append(Path(tmp) / f"{len(parts):06d}.parquet")
            canonical_products(batch).write_parquet(parts[-1], compression="uncompressed")
        del batch
        release_arrow_memory()
        repaired["non_utf8_products_values"] = batch_repairs.get("non_utf8_values", 0)
        if not parts:
            return canonical_products(pl.DataFrame(schema={column: pl.Utf8 for column in PRODUCTS_COLUMNS}))
        return pl.read_parquet(parts)


def drop_repeated_ids(batch: pl.DataFrame, seen_ids: pl.Series) -> tuple[pl.DataFrame, int]:
    """Rows whose product_id was already kept (in an earlier batch or earlier in this one)."""
    ids = pl.col("product_id").cast(pl.Utf8)
    kept = batch.filter(ids.is_first_distinct() & ~ids.is_in(seen_ids.implode()))
    return kept, batch.height - kept.height


def canonical_products(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.select(
        pl.col("product_id").cast(pl.Utf8),
        title=pl.col("product_title").cast(pl.Utf8),
        description=clean_html("product_description"),
        bullets=clean_html("product_bullet_point"),
        brand=pl.col("product_brand").cast(pl.Utf8).fill_null("").str.strip_chars(),
        color=pl.col("product_color").cast(pl.Utf8).fill_null("").str.strip_chars(),
        category=pl.lit("", dtype=pl.Utf8),
        shop_id=pl.lit(None, dtype=pl.Utf8),
    )


def clean_html(column: str) -> pl.Expr:
    """Text without HTML tags or entities, runs of spaces collapsed, line breaks (bullet separators) kept.

    The common entities are replaced in one vectorised pass; ``html.unescape`` handles the rest. (Text that
    was escaped twice, ``&amp;lt;``, is thus unescaped twice: harmless for retrieval.)
    """
    text = pl.col(column).cast(pl.Utf8).fill_null("").str.replace_all(_HTML_TAG, " ")
    text = text.str.replace_many(list(_COMMON_ENTITIES), list(_COMMON_ENTITIES.values()))
    text = text.map_batches(unescape_entities, return_dtype=pl.Utf8, is_elementwise=True)
    # Simple patterns on purpose: a class like [^\S\n] is ~10x slower on a million descriptions.
    return (
        text.str.replace_all(r"[\t\r\f\v\u00a0]", " ")
        .str.replace_all(r" {2,}", " ")
        .str.replace_all(r" ?\n\s*", "\n")
        .str.strip_chars()
    )


def unescape_entities(texts: pl.Series) -> pl.Series:
    """html.unescape, applied only to the few values that hold an entity (Python per value is slow)."""
    has_entity = texts.str.contains(_HTML_ENTITY).fill_null(False)
    if not has_entity.any():
        return texts
    rows = has_entity.arg_true()
    unescaped = [html.unescape(text) for text in texts.gather(rows).to_list()]
    return texts.clone().scatter(rows, pl.Series(unescaped, dtype=pl.Utf8))


def _esci_options(locale: str, version: str, catalogue: str, valid_fraction: float | str) -> dict:
    return {
        "locale": as_choice(locale, "locale", LOCALES),
        "version": as_choice(version, "version", VERSION_COLUMNS),
        "catalogue": as_choice(catalogue, "catalogue", CATALOGUES),
        "valid_fraction": as_float(valid_fraction, "valid_fraction", 0.0, 0.5),
    }
