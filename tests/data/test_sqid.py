"""SQID loader on small fixtures in the exact SQID schema (column names and dtypes of the released files)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.sqid import IMAGE_URLS_FILE, PRODUCT_FEATURES_FILE, QUERY_FEATURES_FILE, load_sqid


def _esci_test_module():
    """tests/data/test_esci.py, whose ESCI file builders these tests reuse (SQID extends ESCI's files)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("esci_file_builders", Path(__file__).with_name("test_esci.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ESCI = _esci_test_module()
esci_products, record_sums, write_esci_files = _ESCI.esci_products, _ESCI.record_sums, _ESCI.write_esci_files

DIM = 4
N_PRODUCTS = 12
PRODUCT_FEATURES_SCHEMA = {
    "product_id": pl.Utf8, "clip_text_features": pl.List(pl.Float32), "clip_image_features": pl.List(pl.Float32),
}
QUERY_FEATURES_SCHEMA = {"query_id": pl.Int64, "clip_text_features": pl.List(pl.Float32)}


def sqid_examples(n_test_queries: int = 10) -> list[dict]:
    """us small-version test queries (the SQID subset) plus rows SQID must ignore: train, es, large-only."""
    rows = []
    for q in range(n_test_queries):
        for j in range(3):
            rows.append({"query": f"query {q}", "query_id": q, "product_id": f"B{(q + j) % N_PRODUCTS:09d}",
                         "product_locale": "us", "esci_label": "ESCI"[(q + j) % 4], "small_version": 1,
                         "large_version": 1, "split": "test"})
    ignored = {"query": "train query", "query_id": 10_000, "product_id": "B000000000", "product_locale": "us",
               "esci_label": "E", "small_version": 1, "large_version": 1, "split": "train"}
    rows += [ignored, {**ignored, "query_id": 10_001, "product_locale": "es", "split": "test"},
             {**ignored, "query_id": 10_002, "small_version": 0, "split": "test"}]
    return [{"example_id": i, **row} for i, row in enumerate(rows)]


def product_feature_rows() -> list[dict]:
    return [{"product_id": f"B{i:09d}", "clip_text_features": [0.1 * i] * DIM,
             "clip_image_features": [float(i)] * DIM} for i in range(N_PRODUCTS)]


def write_sqid_files(folder: Path, feature_rows: list[dict] | None = None, n_test_queries: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = product_feature_rows() if feature_rows is None else feature_rows
    pl.DataFrame(rows, schema=PRODUCT_FEATURES_SCHEMA).write_parquet(folder / PRODUCT_FEATURES_FILE)
    queries = [{"query_id": q, "clip_text_features": [1.0] * DIM} for q in range(n_test_queries)]
    pl.DataFrame(queries, schema=QUERY_FEATURES_SCHEMA).write_parquet(folder / QUERY_FEATURES_FILE)
    urls = "product_id,image_url\n" + "".join(
        f"B{i:09d},{'' if i == 3 else f'https://m.media-amazon.com/images/I/{i}.jpg'}\n" for i in range(N_PRODUCTS)
    )
    (folder / IMAGE_URLS_FILE).write_text(urls)
    resum(folder)
    return folder


def resum(folder: Path) -> None:
    record_sums(folder, [name for name in (PRODUCT_FEATURES_FILE, QUERY_FEATURES_FILE, IMAGE_URLS_FILE)
                         if (folder / name).is_file()])


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def esci_raw(tmp_path) -> Path:
    return write_esci_files(tmp_path / "esci", examples=sqid_examples())


@pytest.fixture
def sqid_raw(tmp_path) -> Path:
    return write_sqid_files(tmp_path / "sqid")


def test_loads_the_test_subset_with_image_features_and_a_stated_resplit(sqid_raw, esci_raw):
    ds = load_sqid(sqid_raw, esci_raw)
    assert ds.queries.height == 10  # train, es and large-only rows are not SQID
    assert set(ds.products["product_id"]) == set(ds.judgments["product_id"])  # the judged catalogue
    assert ds.image_features.schema == {"product_id": pl.Utf8, "features": pl.List(pl.Float32)}
    assert ds.image_features.height == N_PRODUCTS
    assert "re-split at query level 70%/10%/20%" in ds.meta["protocol"]
    assert ds.meta["eval_protocols"] == ["full", "rerank"] and ds.meta["fully_judged"] is False
    urls = dict(ds.products.select("product_id", "image_url").iter_rows())
    assert urls["B000000003"] is None and urls["B000000004"].endswith("/4.jpg")


def test_resplit_is_seeded_and_roughly_follows_the_fractions(sqid_raw, tmp_path):
    esci_raw = write_esci_files(tmp_path / "esci", examples=sqid_examples(n_test_queries=400))
    first = load_sqid(sqid_raw, esci_raw, seed="0", cache="false")
    assert first.queries.equals(load_sqid(sqid_raw, esci_raw, seed=0, cache=False).queries)
    counts = dict(first.queries["split"].value_counts().iter_rows())
    assert 240 < counts["train"] < 320 and 20 < counts["valid"] < 60 and 50 < counts["test"] < 110
    other = load_sqid(sqid_raw, esci_raw, seed=1, cache=False)
    assert not first.queries["split"].equals(other.queries["split"])
    half = load_sqid(sqid_raw, esci_raw, fractions="0.5/0/0.5", cache=False)  # as a dataset spec passes it
    assert "valid" not in set(half.queries["split"])


def test_text_features_are_optional_extra_columns(sqid_raw, esci_raw):
    ds = load_sqid(sqid_raw, esci_raw, text_features="true")
    assert ds.products.schema["clip_text_features"] == pl.List(pl.Float32)
    assert ds.queries["clip_text_features"].null_count() == 0


# -- bad input --------------------------------------------------------------------------------------------
def test_bad_feature_rows_are_dropped_and_counted(esci_raw, tmp_path):
    rows = product_feature_rows()
    rows[1] = {**rows[1], "clip_image_features": None}
    rows[2] = {**rows[2], "clip_image_features": [1.0, 2.0]}  # wrong dimension
    rows.append({**rows[0], "product_id": "UNKNOWN000"})
    rows.append(rows[5])  # duplicate
    ds = load_sqid(write_sqid_files(tmp_path / "sqid", rows), esci_raw)
    dropped = ds.meta["dropped"]
    assert dropped["image_features_null"] == 1 and dropped["image_features_wrong_dimension"] == 1
    assert dropped["image_features_unknown_id"] == 1 and dropped["image_features_duplicate_id"] == 1
    assert ds.image_features.height == N_PRODUCTS - 2 and ds.meta["image_coverage"] < 1


def test_missing_feature_column_is_named_with_a_hint(sqid_raw, esci_raw):
    pl.read_parquet(sqid_raw / PRODUCT_FEATURES_FILE).drop("clip_image_features").write_parquet(
        sqid_raw / PRODUCT_FEATURES_FILE)
    resum(sqid_raw)
    with pytest.raises(DatasetError, match=rf"{PRODUCT_FEATURES_FILE}: missing columns \['clip_image_features'\]"):
        load_sqid(sqid_raw, esci_raw)
    ds = load_sqid(sqid_raw, esci_raw, image_column="clip_text_features")  # a renamed release: configurable
    assert ds.image_features.height == N_PRODUCTS


def test_wrong_feature_type_is_an_error(sqid_raw, esci_raw):
    frame = pl.read_parquet(sqid_raw / PRODUCT_FEATURES_FILE)
    frame.with_columns(pl.col("clip_image_features").cast(pl.List(pl.Utf8)).list.join(",")).write_parquet(
        sqid_raw / PRODUCT_FEATURES_FILE)
    resum(sqid_raw)
    with pytest.raises(DatasetError, match="wrong column types: clip_image_features is String"):
        load_sqid(sqid_raw, esci_raw)


def test_lfs_pointer_and_checksum_mismatch_are_errors(sqid_raw, esci_raw):
    (sqid_raw / IMAGE_URLS_FILE).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n")
    with pytest.raises(DatasetError, match=f"{IMAGE_URLS_FILE} is a Git LFS pointer"):
        load_sqid(sqid_raw, esci_raw)
    (sqid_raw / IMAGE_URLS_FILE).unlink()  # the URLs file is optional
    resum(sqid_raw)
    assert load_sqid(sqid_raw, esci_raw).products["image_url"].null_count() == N_PRODUCTS
    sums = (sqid_raw / "SHA256SUMS").read_text().splitlines()
    (sqid_raw / "SHA256SUMS").write_text(f"{'1' * 64}  {PRODUCT_FEATURES_FILE}\n{sums[1]}\n")
    with pytest.raises(DatasetError, match=f"sha256 mismatch for .*{PRODUCT_FEATURES_FILE}"):
        load_sqid(sqid_raw, esci_raw)


def test_bad_fractions_are_rejected(sqid_raw, esci_raw):
    with pytest.raises(DatasetError, match="summing to 1"):
        load_sqid(sqid_raw, esci_raw, fractions="0.7,0.2,0.2")


def test_products_of_the_subset_come_from_esci_with_its_drop_counts(sqid_raw, tmp_path):
    products = esci_products()
    products[7] = {**products[7], "product_title": ""}
    ds = load_sqid(sqid_raw, write_esci_files(tmp_path / "esci", sqid_examples(), products))
    assert ds.meta["dropped"]["blank_title"] == 1 and ds.meta["dropped"]["judgment_unknown_product"] > 0
    assert ds.meta["dropped"]["image_features_unknown_id"] == 1  # the dropped product's vector
