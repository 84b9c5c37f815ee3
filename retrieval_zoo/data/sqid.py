"""SQID, the Shopping Queries Image Dataset (MIT; repo Crossing-Minds/shopping-queries-image-dataset, ``sqid/``).

SQID adds product images (URLs) and CLIP ViT-L/14 embeddings to the ESCI rows with ``small_version == 1``,
``split == "test"``, ``product_locale == "us"``: 8,956 queries over 164,900 products. Files (Git LFS):

- ``product_features.parquet``: product_id, clip_text_features (title), clip_image_features (image); both
  lists of float32 (column names from the dataset card on the Hugging Face mirror; configurable).
- ``query_features.parquet``: query_id, clip_text_features.
- ``product_image_urls.csv``: product_id, image_url (~95% of the products have one).

Text, queries and labels come from the ESCI files, so a SQID load needs both folders.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from retrieval_zoo.data import esci, registry
from retrieval_zoo.data.checks import (
    INTEGER_TYPES,
    TEXT_TYPES,
    as_bool,
    as_int,
    decode_csv_bytes,
    drop_duplicates,
    drop_unknown,
    fingerprint,
    load_or_build,
    parquet_schema,
    require_columns,
    require_data_file,
    sums_file_for,
    unit_hashes,
    verify_sha256,
)
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset

PRODUCT_FEATURES_FILE = "product_features.parquet"
QUERY_FEATURES_FILE = "query_features.parquet"
IMAGE_URLS_FILE = "product_image_urls.csv"
_MEDIA = "https://media.githubusercontent.com/media/Crossing-Minds/shopping-queries-image-dataset/main/sqid"
DOWNLOAD_URLS = {
    PRODUCT_FEATURES_FILE: f"{_MEDIA}/{PRODUCT_FEATURES_FILE}",
    QUERY_FEATURES_FILE: f"{_MEDIA}/{QUERY_FEATURES_FILE}",
    IMAGE_URLS_FILE: f"{_MEDIA}/{IMAGE_URLS_FILE}",
}
FLOAT_LISTS = (pl.List, pl.Array)
# Bump when the preparation changes, so that cached prepared datasets are rebuilt.
PREPARATION_VERSION = 1


def load_sqid(
    path: str | Path | None = None,
    esci_path: str | Path | None = None,
    seed: int | str = 0,
    fractions: str | tuple[float, float, float] = "0.7/0.1/0.2",
    image_column: str = "clip_image_features",
    text_column: str = "clip_text_features",
    text_features: bool | str = False,
    cache: bool | str = True,
) -> ProductSearchDataset:
    """Load SQID in the canonical schema, with ``image_features`` (product_id, CLIP image embedding).

    Protocol: the ESCI task-1 US test queries (8,956) are the only ones with images, so they are re-split at
    query level into train/valid/test by ``fractions`` (default 70/10/20) on sha256(seed, query_id); the
    catalogue is the products judged for those queries (164,900). Results on SQID are therefore not
    comparable with ESCI's official test split: state this protocol with every number.

    Mapping: esci_label E/S/C/I as is, gains E=1, S=0.1, C=0.01, I=0 (stored 100/10/1/0); unjudged pairs are
    unknown (``fully_judged=False``). Products keep an ``image_url`` column (null without image); with
    ``text_features=True`` products and queries also get SQID's ``clip_text_features``.

    ``path``: the folder with the SQID files (default ``$RETRIEVAL_ZOO_SQID_DIR`` or ``<cache>/sqid/raw``);
    ``esci_path``: the ESCI folder (as for ``load_esci``). Column names are configurable in case a release
    renames them. Parameters may be strings (from the CLI).
    """
    options = {
        "seed": as_int(seed, "seed"), "fractions": parse_fractions(fractions), "image_column": image_column,
        "text_column": text_column, "text_features": as_bool(text_features, "text_features"),
    }
    raw = sqid_raw_dir(path)
    esci_raw = esci.esci_raw_dir(esci_path)
    esci_files = esci.check_esci_files(esci_raw)
    files = check_sqid_files(raw, image_column, text_column, options["text_features"])
    sums = verify_sha256(esci_files.values(), sums_file_for(esci_raw, "esci"), dataset="esci")
    sums |= verify_sha256(files.values(), sums_file_for(raw, "sqid"), dataset="sqid")
    folder = registry.cache_dir() / "sqid" / "prepared" / fingerprint(PREPARATION_VERSION, sums, options)
    return load_or_build(
        folder, lambda: build_sqid(esci_files, files, **options, sums=sums), enabled=as_bool(cache, "cache")
    )


def sqid_raw_dir(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    return registry.path_from_env("RETRIEVAL_ZOO_SQID_DIR", lambda: registry.cache_dir() / "sqid" / "raw")


def check_sqid_files(raw: Path, image_column: str, text_column: str, text_features: bool) -> dict[str, Path]:
    """product_features is required; the query features (only for ``text_features``) and the image URLs are
    read when present."""
    files = {}
    product_columns = {"product_id": TEXT_TYPES, image_column: FLOAT_LISTS}
    if text_features:
        product_columns[text_column] = FLOAT_LISTS
    required = {PRODUCT_FEATURES_FILE: product_columns}
    if text_features:
        required[QUERY_FEATURES_FILE] = {"query_id": INTEGER_TYPES + TEXT_TYPES, text_column: FLOAT_LISTS}
    for name, columns in required.items():
        file = require_data_file(Path(raw) / name, source_url=DOWNLOAD_URLS[name],
                                 fix_hint="shopping-queries-image-dataset")
        require_columns(parquet_schema(file), columns, file=name)
        files[name] = file
    urls = Path(raw) / IMAGE_URLS_FILE
    if urls.is_file():
        files[IMAGE_URLS_FILE] = require_data_file(urls, source_url=DOWNLOAD_URLS[IMAGE_URLS_FILE],
                                                   fix_hint="shopping-queries-image-dataset")
    return files


def parse_fractions(fractions: str | tuple[float, ...]) -> tuple[float, float, float]:
    try:
        # "/" too: a dataset spec splits its parameters on commas ("sqid:fractions=0.7/0.1/0.2").
        parts = tuple(float(x) for x in (re.split(r"[,/]", fractions) if isinstance(fractions, str) else fractions))
    except ValueError as error:
        raise DatasetError(f"fractions={fractions!r} must be three numbers, e.g. 0.7/0.1/0.2") from error
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1) > 1e-6:
        raise DatasetError(f"fractions={fractions!r} must be three non-negative numbers summing to 1")
    return parts  # type: ignore[return-value]


def build_sqid(
    esci_files: dict[str, Path], files: dict[str, Path], *, seed: int, fractions: tuple[float, float, float],
    image_column: str, text_column: str, text_features: bool, sums: dict[str, str] | None = None,
) -> ProductSearchDataset:
    dropped: dict[str, int] = {}
    repaired: dict[str, int] = {}
    judgments = esci.read_esci_judgments(
        esci_files[esci.EXAMPLES_FILE], "us", "small", dropped=dropped, repaired=repaired,
        extra_filter=pl.col("split").cast(pl.Utf8) == "test",
    )
    queries = resplit_queries(judgments, seed, fractions)
    products = esci.read_esci_products(
        esci_files[esci.PRODUCTS_FILE], "us", only_ids=judgments["product_id"].unique(), dropped=dropped,
        repaired=repaired,
    )
    queries, judgments = esci.finish_judgments(queries, judgments, products, dropped)
    image_features = read_features(files[PRODUCT_FEATURES_FILE], "product_id", image_column, products["product_id"],
                                   dropped, prefix="image_features")
    products = add_image_urls(products, files.get(IMAGE_URLS_FILE), repaired)
    if text_features:
        products, queries = add_text_features(products, queries, files, text_column, dropped)
    train, valid, test = fractions
    protocol = (
        f"SQID: ESCI task-1 (small_version==1) US test queries ({queries.height:,}) re-split at query level "
        f"{train:.0%}/{valid:.0%}/{test:.0%} train/valid/test by sha256(seed={seed}, query_id); catalogue = the "
        f"{products.height:,} judged products; labels esci_label E/S/C/I; CLIP ViT-L/14 image features for "
        f"{image_features.height:,} products"
    )
    meta = esci.esci_meta(protocol, dropped, repaired, sums) | {
        "seed": seed, "fractions": list(fractions), "image_feature_model": "openai/clip-vit-large-patch14",
        "image_coverage": round(image_features.height / max(products.height, 1), 4),
    }
    return ProductSearchDataset(name="sqid", products=products, queries=queries, judgments=judgments,
                                image_features=image_features, meta=meta)


def resplit_queries(judgments: pl.DataFrame, seed: int, fractions: tuple[float, float, float]) -> pl.DataFrame:
    """One row per query, split train/valid/test by where sha256(seed, query_id) falls in [0, 1)."""
    queries = judgments.group_by("query_id", maintain_order=True).agg(pl.col("query").first())
    position = unit_hashes(queries["query_id"], seed)
    train, valid, _ = fractions
    split = (
        pl.when(position < train).then(pl.lit("train"))
        .when(position < train + valid).then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
    )
    return queries.with_columns(split=split, group=pl.lit(None, dtype=pl.Utf8)).select(
        "query_id", "query", "split", "group"
    )


def read_features(
    file: Path, key: str, column: str, known_ids: pl.Series, dropped: dict[str, int], *, prefix: str
) -> pl.DataFrame:
    """(key, features List(Float32)) for the known ids; null, empty or wrong-sized vectors, duplicates and
    unknown ids are dropped and counted under ``<prefix>_...``."""
    frame = pl.scan_parquet(file).select(
        pl.col(key).cast(pl.Utf8), features=pl.col(column).cast(pl.List(pl.Float32))
    ).collect()
    frame, dropped[f"{prefix}_unknown_id"] = drop_unknown(frame, key, known_ids)
    frame, dropped[f"{prefix}_duplicate_id"] = drop_duplicates(frame, key)
    usable = frame.filter(pl.col("features").list.len() > 0)
    dropped[f"{prefix}_null"] = frame.height - usable.height
    if usable.is_empty():
        raise DatasetError(f"{file.name}: no usable '{column}' vectors for the known ids")
    dimension = usable["features"].list.len().mode().sort()[0]
    consistent = usable.filter(pl.col("features").list.len() == dimension)
    dropped[f"{prefix}_wrong_dimension"] = usable.height - consistent.height
    return consistent


def add_image_urls(products: pl.DataFrame, urls_file: Path | None, repaired: dict[str, int]) -> pl.DataFrame:
    """An extra ``image_url`` column (null where SQID found no image, or without the URLs file)."""
    if urls_file is None:
        return products.with_columns(image_url=pl.lit(None, dtype=pl.Utf8))
    text, repaired["non_utf8_image_url_lines"] = decode_csv_bytes(urls_file)
    urls = pl.read_csv(text, schema={"product_id": pl.Utf8, "image_url": pl.Utf8})
    urls = urls.unique("product_id", keep="first", maintain_order=True)
    return products.join(urls, on="product_id", how="left", maintain_order="left")


def add_text_features(
    products: pl.DataFrame, queries: pl.DataFrame, files: dict[str, Path], column: str, dropped: dict[str, int]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """SQID's CLIP text embeddings as extra ``clip_text_features`` columns (null where missing)."""
    product_text = read_features(files[PRODUCT_FEATURES_FILE], "product_id", column, products["product_id"],
                                 dropped, prefix="product_text_features")
    query_text = read_features(files[QUERY_FEATURES_FILE], "query_id", column, queries["query_id"],
                               dropped, prefix="query_text_features")
    rename = {"features": "clip_text_features"}
    return (
        products.join(product_text.rename(rename), on="product_id", how="left", maintain_order="left"),
        queries.join(query_text.rename(rename), on="query_id", how="left", maintain_order="left"),
    )
