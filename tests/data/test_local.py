"""The generic local-folder loader: the documented example folder, and small broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.local import load_local

EXAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "local" / "example"


@pytest.fixture
def folder(tmp_path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "shop"))


def append(path: Path, text: str) -> None:
    path.write_bytes(path.read_bytes() + (text.encode() if isinstance(text, str) else text))


def test_the_example_folder_loads():
    ds = load_local(EXAMPLE)
    assert (ds.products.height, ds.queries.height, ds.judgments.height) == (10, 4, 15)
    assert ds.name == "local-example" and ds.meta["label_source"] == "labels" and not ds.meta["fully_judged"]
    assert set(ds.queries["split"]) == {"train", "valid", "test"}
    assert ds.products["shop_id"].null_count() == 10 and ds.products["bullets"][2] == ""
    assert ds.products["bullets"][0] == "Breathable mesh\nRock plate"  # a quoted multi-line CSV field


def test_parquet_files_with_integer_ids_graded_labels_and_extra_columns(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    pl.DataFrame({"product_id": [1, 2, 3], "title": ["a", "b", "c"], "price": [1.0, 2.0, 3.0]}).write_parquet(
        folder / "products.parquet")
    pl.DataFrame({"query_id": [7], "query": ["x"], "split": ["Validation"]}).write_parquet(folder / "queries.parquet")
    pl.DataFrame({"query_id": [7, 7, 7], "product_id": [1, 2, 3], "label": [3, 1, 0]}).write_parquet(
        folder / "judgments.parquet")
    (folder / "meta.json").write_text(json.dumps({"name": "myshop", "protocol": "my own split"}))
    ds = load_local(str(folder))
    assert ds.name == "myshop" and ds.meta["protocol"] == "my own split"
    assert ds.products.schema["product_id"] == pl.Utf8 and "price" in ds.products.columns
    assert ds.queries["split"].to_list() == ["valid"]
    assert ds.judgments["label"].to_list() == ["E", "C", "I"]


def test_bad_rows_are_dropped_and_counted(folder):
    append(folder / "products.csv", "p01,duplicate of p01,,,,,\np11,   ,,,,,\n")
    append(folder / "queries.csv", "q5,  ,test\nq1,again,train\nq6,no judgments,test\n")
    append(folder / "judgments.csv", "q1,p01,E\nq1,p03,maybe\nq9,p01,E\nq2,p99,S\nq5,p01,E\n")
    dropped = load_local(folder).meta["dropped"]
    assert dropped == {
        "blank_title": 1, "duplicate_product_id": 1, "blank_query": 1, "duplicate_query_id": 1,
        "unknown_label": 1, "duplicate_judgment": 1, "judgment_unknown_query": 2, "judgment_unknown_product": 1,
        "query_without_judgments": 1,
    }


def test_non_utf8_csv_bytes_are_replaced_and_counted(folder):
    append(folder / "products.csv", b"p11,Caf\xe9 cr\xe8me espresso cups,,,,,\n")
    append(folder / "judgments.csv", "q3,p11,S\n")
    ds = load_local(folder)
    assert ds.meta["repaired"]["non_utf8_lines_products.csv"] == 1
    assert ds.products.filter(pl.col("product_id") == "p11")["title"].item() == "Caf\ufffd cr\ufffdme espresso cups"


def test_unknown_split_is_an_error(folder):
    append(folder / "queries.csv", "q5,holdout query,holdout\n")
    with pytest.raises(DatasetError, match=r"unknown split values \['holdout'\]"):
        load_local(folder)


def test_missing_columns_are_named_with_the_file(folder):
    (folder / "judgments.csv").write_text("query_id,product_id,grade\nq1,p01,E\n")
    with pytest.raises(DatasetError, match=r"judgments.csv: missing columns \['label'\]"):
        load_local(folder)


def test_wrong_types_are_named(folder):
    (folder / "products.csv").unlink()
    pl.DataFrame({"product_id": ["p01"], "title": [["not", "text"]]}).write_parquet(folder / "products.parquet")
    with pytest.raises(DatasetError, match="products.parquet: wrong column types: title is List"):
        load_local(folder)


def test_missing_or_ambiguous_files_and_lfs_pointers(folder, tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_local(tmp_path / "nothing")
    pl.read_csv(folder / "queries.csv").write_parquet(folder / "queries.parquet")
    with pytest.raises(DatasetError, match="both queries.parquet and queries.csv"):
        load_local(folder)
    (folder / "queries.parquet").unlink()
    (folder / "judgments.csv").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 3\n")
    with pytest.raises(DatasetError, match="judgments.csv is a Git LFS pointer"):
        load_local(folder)
    (folder / "judgments.csv").unlink()
    with pytest.raises(DatasetError, match="no judgments.parquet or judgments.csv"):
        load_local(folder)
