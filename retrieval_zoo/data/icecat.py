"""Icecat products + Chorus "Broad Query Set" graded judgments: a small real product-search benchmark.

Source: the public repository querqy/chorus (Apache-2.0): ``data-encoder/ecommerce/vectors/data/{1..4}.json.zip``
(renamed ``icecat_products_{1..4}.json.zip``; product data under the Icecat Open Content License, attribution
required) and ``katas/Broad_Query_Set_rated.csv`` (query, docid, rating 0..3 by human raters).
The project keeps a verified copy in ``../shared/data/icecat-chorus``; it is read in place, never copied.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections import Counter
from pathlib import Path

import polars as pl

from retrieval_zoo.data import registry
from retrieval_zoo.data.checks import (
    as_bool,
    as_int,
    decode_csv_bytes,
    drop_blank,
    drop_duplicates,
    drop_unknown,
    fingerprint,
    load_or_build,
    require_columns,
    require_data_file,
    stable_unit_hash,
    sums_file_for,
    verify_sha256,
)
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.esci import GAINS

PRODUCT_FILES = tuple(f"icecat_products_{i}.json.zip" for i in range(1, 5))
JUDGMENTS_FILE = "Broad_Query_Set_rated.csv"
_CHORUS = "https://github.com/querqy/chorus/raw/main"
DOWNLOAD_URLS = {
    **{name: f"{_CHORUS}/data-encoder/ecommerce/vectors/data/{i}.json.zip" for i, name in enumerate(PRODUCT_FILES, 1)},
    JUDGMENTS_FILE: f"{_CHORUS}/katas/{JUDGMENTS_FILE}",
}
RATING_TO_LABEL = {3: "E", 2: "S", 1: "C", 0: "I"}
LABEL_MAPPING = (
    "Chorus rating 3 -> E (Exact), 2 -> S (Substitute), 1 -> C (Complement), 0 -> I (Irrelevant); "
    "reported with ESCI gains E=1, S=0.1, C=0.01, I=0 (stored 100/10/1/0)"
)
N_BULLET_ATTRIBUTES = 8
_OWN_FIELD_ATTRIBUTES = {"attr_t_product_colour", "attr_t_product_type"}  # already the color / category
# Bump when the preparation changes, so that cached prepared datasets are rebuilt.
PREPARATION_VERSION = 2  # 2: the protocol text names the inner validation fold


def load_icecat(path: str | Path | None = None, n_folds: int | str = 5, fold_seed: int | str = 0,
                cache: bool | str = True) -> ProductSearchDataset:
    """Load Icecat/Chorus in the canonical schema (cached under ``<cache>/icecat``, keyed by the checksums).

    Protocol: 135 queries are too few for a held-out split, so every query has split ``test`` and an Int32
    ``fold`` in 0..n_folds-1 (queries ranked by sha256 of their text, dealt round-robin: balanced and
    deterministic); the runner does 5-fold query-level cross-validation (per fold: train on three folds,
    select the epoch on the next, evaluate on the held-out one). The catalogue is all 19,406 products (full-catalogue retrieval). ``fold_seed`` deals the folds
    by another hash (sha256 of "<seed>:<text>"; 0, the board's, is today's folds): repeated cross-validation
    reruns a model over several fold seeds, so a difference between models is not one split's accident
    (``benchmarks/repeated_cv.py``).

    Mapping: rating 3/2/1/0 -> E/S/C/I, ESCI gains. Unjudged pairs are unknown (``fully_judged=False``).
    Fields: title = ``title`` (else ``name``), description = ``short_description``, bullets = up to eight
    ``attr_t_*`` text attributes ("name: value" lines, the most common attributes first), brand =
    ``supplier``, color = ``attr_t_product_colour``, category = ``attr_t_product_type`` (the only category-like
    field; ~8% of products, "" otherwise); an extra ``image_url`` column holds the 500x500 image URL (images
    are not available offline).

    ``path``: the folder (default ``$RETRIEVAL_ZOO_ICECAT_DIR``, else ``../shared/data/icecat-chorus``, else
    ``<cache>/icecat/raw`` where ``prepare("icecat")`` downloads). Files are verified against the folder's
    SHA256SUMS (else the repository's ``datasets/icecat-chorus/SHA256SUMS``).
    """
    folds, seed = as_int(n_folds, "n_folds"), as_int(fold_seed, "fold_seed")
    if folds < 2:
        raise DatasetError(f"n_folds={n_folds!r} must be at least 2")
    if seed < 0:
        raise DatasetError(f"fold_seed={fold_seed!r} must be 0 (the board's folds) or a positive integer")
    raw = icecat_raw_dir(path)
    files = check_icecat_files(raw)
    sums = verify_sha256(files, sums_file_for(raw, "icecat-chorus"), dataset="icecat")
    # seed 0 keeps the key it had before fold seeds existed: the prepared board dataset is not rebuilt
    key = fingerprint(PREPARATION_VERSION, sums, folds, *([seed] if seed else []))
    folder = registry.cache_dir() / "icecat" / key
    return load_or_build(folder, lambda: build_icecat(files, folds, sums, seed), enabled=as_bool(cache, "cache"))


def icecat_raw_dir(path: str | Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    if "RETRIEVAL_ZOO_ICECAT_DIR" in os.environ:
        return Path(os.environ["RETRIEVAL_ZOO_ICECAT_DIR"])
    shared = registry.shared_data_dir() / "icecat-chorus"
    downloaded = registry.cache_dir() / "icecat" / "raw"
    return downloaded if not shared.is_dir() and downloaded.is_dir() else shared


def check_icecat_files(raw: Path) -> list[Path]:
    if not Path(raw).is_dir():
        raise DatasetError(
            f"icecat-chorus data not found at {raw}; put the folder there (see datasets/icecat-chorus/README.md), "
            f"set RETRIEVAL_ZOO_ICECAT_DIR, or run `make data DATASET=icecat` to download it from querqy/chorus"
        )
    return [require_data_file(Path(raw) / name, source_url=DOWNLOAD_URLS[name], fix_hint="querqy/chorus")
            for name in (*PRODUCT_FILES, JUDGMENTS_FILE)]


def build_icecat(files: list[Path], n_folds: int, sums: dict[str, str] | None = None,
                 fold_seed: int = 0) -> ProductSearchDataset:
    dropped: dict[str, int] = {}
    repaired: dict[str, int] = {}
    records = [record for file in files if file.name in PRODUCT_FILES for record in read_records(file, repaired)]
    products = canonical_products(records, dropped)
    judgments = read_judgments(next(f for f in files if f.name == JUDGMENTS_FILE), dropped, repaired)
    judgments, dropped["judgment_unknown_product"] = drop_unknown(judgments, "product_id", products["product_id"])
    queries = folded_queries(judgments["query"].unique(), n_folds, fold_seed)
    judgments = judgments.join(queries.select("query", "query_id"), on="query", how="left", maintain_order="left")
    categorised = products.filter(pl.col("category") != "").height
    protocol = (
        f"Icecat/Chorus: {n_folds}-fold query-level cross-validation over {queries.height} queries (folds by "
        f"sha256 of {f'{fold_seed}:<query text> (fold seed {fold_seed})' if fold_seed else 'the query text'}, "
        f"all queries split=test; per fold: train on {n_folds - 2} folds, select the "
        f"training epoch on the next fold (inner validation), evaluate on the held-out fold); "
        f"labels Chorus rating 3/2/1/0 -> E/S/C/I; catalogue = all {products.height:,} Icecat products"
    )
    meta = {
        "label_source": "labels",
        "fully_judged": False,
        "protocol": protocol,
        "label_mapping": LABEL_MAPPING,
        "gains": GAINS,
        "cv_folds": n_folds,
        "fold_seed": fold_seed,
        "dropped": dropped,
        "repaired": repaired,
        "category_source": f"attr_t_product_type ({categorised:,} of {products.height:,} products)",
        "license": "products: Icecat Open Content License (attribution required); judgments: Apache-2.0 "
                   "(querqy/chorus)",
        "source_sha256": sums or {},
    }
    return ProductSearchDataset(name="icecat", products=products, queries=queries,
                                judgments=judgments.select("query_id", "product_id", "label"), meta=meta)


# -- products ---------------------------------------------------------------------------------------------
def read_records(zip_path: Path, repaired: dict[str, int]) -> list[dict]:
    """The JSON array inside one zip (one member), decoded with replacement if it is not valid UTF-8."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            raw = archive.read(members[0])
    except (zipfile.BadZipFile, IndexError) as error:
        raise DatasetError(f"{zip_path} is not a zip holding one JSON file ({error}); download it again") from error
    text = raw.decode("utf-8", errors="replace")
    repaired[f"non_utf8_chars_{zip_path.name}"] = text.count("\ufffd") - raw.count("\ufffd".encode())
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{zip_path.name}: not valid JSON ({error})") from error
    if not isinstance(records, list):
        raise DatasetError(f"{zip_path.name}: expected a JSON array of product records, got {type(records).__name__}")
    return records


def canonical_products(records: list, dropped: dict[str, int]) -> pl.DataFrame:
    usable = [r for r in records if isinstance(r, dict) and r.get("id") not in (None, "")]
    dropped["record_without_id"] = len(records) - len(usable)
    attribute_order = [key for key, _ in Counter(
        key for r in usable for key, value in r.items()
        if key.startswith("attr_t_") and key not in _OWN_FIELD_ATTRIBUTES and _text(value)
    ).most_common()]
    rank = {key: i for i, key in enumerate(attribute_order)}
    products = pl.DataFrame(
        [product_row(record, rank) for record in usable],
        schema={"product_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "bullets": pl.Utf8,
                "brand": pl.Utf8, "color": pl.Utf8, "category": pl.Utf8, "shop_id": pl.Utf8, "image_url": pl.Utf8},
        orient="row",
    )
    products, dropped["blank_title"] = drop_blank(products, "title")
    products, dropped["duplicate_product_id"] = drop_duplicates(products, "product_id")
    return products


def product_row(record: dict, attribute_rank: dict[str, int]) -> tuple:
    title = _text(record.get("title")) or _text(record.get("name"))
    category = _text(record.get("attr_t_product_type"))
    return (
        _text(record["id"]), title, _text(record.get("short_description")), bullet_text(record, attribute_rank),
        _text(record.get("supplier")), _text(record.get("attr_t_product_colour")),
        "" if category.isdigit() else category,  # a few records carry a bare number there
        None, _text(record.get("img_500x500")) or None,
    )


def bullet_text(record: dict, attribute_rank: dict[str, int]) -> str:
    keys = sorted((k for k in record if k in attribute_rank and _text(record[k])), key=attribute_rank.get)
    return "\n".join(f"{_attribute_name(k)}: {_text(record[k])}" for k in keys[:N_BULLET_ATTRIBUTES])


def _attribute_name(key: str) -> str:
    # "attr_t_operating_temperature__t_t_" -> "operating temperature": Icecat writes "(T-T)" as "__t_t_".
    words = re.sub(r"_+", " ", key.removeprefix("attr_t_")).split()
    return " ".join(word for word in words if len(word) > 1 or word.isdigit())


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value if _text(v))
    return str(value).strip()


# -- judgments and queries --------------------------------------------------------------------------------
def read_judgments(csv_path: Path, dropped: dict[str, int], repaired: dict[str, int]) -> pl.DataFrame:
    """query, product_id, label from the rated CSV; bad rows dropped and counted."""
    text, repaired["non_utf8_judgment_lines"] = decode_csv_bytes(csv_path)
    frame = pl.read_csv(text, infer_schema=False)  # all text: a stray value cannot break type inference
    require_columns(frame.schema, {"query": (pl.Utf8,), "docid": (pl.Utf8,), "rating": (pl.Utf8,)},
                    file=csv_path.name)
    frame = frame.select(
        pl.col("query").str.strip_chars(), product_id=pl.col("docid").str.strip_chars(),
        label=pl.col("rating").str.strip_chars().cast(pl.Int64, strict=False).replace_strict(
            RATING_TO_LABEL, default=None, return_dtype=pl.Utf8),
    )
    labelled = frame.filter(pl.col("label").is_not_null())
    dropped["invalid_rating"] = frame.height - labelled.height
    labelled, dropped["blank_query"] = drop_blank(labelled, "query")
    labelled, dropped["duplicate_judgment"] = drop_duplicates(labelled, ["query", "product_id"])
    return labelled


def folded_queries(query_texts: pl.Series, n_folds: int, fold_seed: int = 0) -> pl.DataFrame:
    """Queries with stable ids (q000.. in text order) and balanced folds dealt by the hash of the text (and of
    ``fold_seed``): the ids do not depend on the seed, so runs over several fold seeds pair query by query."""
    texts = sorted(query_texts.to_list())
    by_hash = sorted(texts, key=lambda text: (stable_unit_hash(text, fold_seed), text))
    fold_of = {text: i % n_folds for i, text in enumerate(by_hash)}
    width = len(str(len(texts)))
    return pl.DataFrame({
        "query_id": [f"q{i:0{width}d}" for i in range(len(texts))],
        "query": texts,
        "split": ["test"] * len(texts),
        "group": pl.Series([None] * len(texts), dtype=pl.Utf8),
        "fold": pl.Series([fold_of[text] for text in texts], dtype=pl.Int32),
    })
