"""Icecat/Chorus loader: the real shared data when present (skipped otherwise), and small broken fixtures."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.icecat import JUDGMENTS_FILE, PRODUCT_FILES, load_icecat

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "icecat-chorus"
needs_shared_data = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"icecat-chorus data not found at {SHARED} (the project's ../shared/data)"
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "cache"))


# -- the real data ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path_factory.mktemp("icecat-cache")))
        return load_icecat(SHARED)


@needs_shared_data
def test_real_data_sizes_labels_and_folds(real):
    assert real.products.height == 19_406
    assert real.queries.height == 135 and set(real.queries["split"]) == {"test"}
    assert real.judgments.height == 3_668
    assert dict(real.judgments["label"].value_counts().iter_rows()) == {"E": 1472, "S": 105, "C": 238, "I": 1853}
    assert real.queries.schema["fold"] == pl.Int32
    assert sorted(real.queries["fold"].value_counts()["count"].to_list()) == [27] * 5
    assert real.meta["cv_folds"] == 5 and "5-fold query-level cross-validation" in real.meta["protocol"]
    assert all(count == 0 for count in real.meta["dropped"].values())
    assert real.products.filter(pl.col("category") != "").height > 1_000  # attr_t_product_type


@needs_shared_data
def test_real_data_is_cached_by_checksum(real, monkeypatch, tmp_path):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "fresh"))
    load_icecat(SHARED)
    (prepared,) = [p for p in (tmp_path / "fresh" / "icecat").iterdir() if p.is_dir()]
    assert (prepared / "meta.json").is_file()
    assert load_icecat(SHARED).queries.equals(real.queries)


# -- small fixtures in the same formats -------------------------------------------------------------------
def record(i: int, **fields) -> dict:
    return {"id": str(i), "name": f"M{i}", "title": f"Brand M{i} laptop", "ean": [f"{i:013d}"],
            "short_description": f"A laptop {i}", "supplier": "Brand", "price": 100 + i,
            "attr_t_product_colour": "Black", "attr_t_product_type": "Notebook", "attr_t_material": "Plastic",
            "attr_t_operating_temperature__t_t_": "0 - 35", **fields}


def write_icecat_folder(folder: Path, records: list[dict] | None = None, rated: str | bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = [record(i) for i in range(8)] if records is None else records
    for n, name in enumerate(PRODUCT_FILES):
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr(f"{n + 1}.json", json.dumps(records[n::4]))
    if rated is None:
        rated = "query,docid,rating\n" + "".join(f"query {q},{(q + j) % 8},{(q + j) % 4}\n"
                                                 for q in range(10) for j in range(3))
    (folder / JUDGMENTS_FILE).write_bytes(rated.encode() if isinstance(rated, str) else rated)
    sums = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}" for n in (*PRODUCT_FILES, JUDGMENTS_FILE)]
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return folder


def test_fixture_loads_with_mapping_folds_and_fields(tmp_path):
    ds = load_icecat(write_icecat_folder(tmp_path / "icecat"), n_folds="5")
    assert ds.queries.height == 10 and sorted(ds.queries["fold"].value_counts()["count"]) == [2] * 5
    labels = dict(ds.judgments.join(ds.queries, on="query_id").select(
        pl.col("query") + "|" + pl.col("product_id"), "label").iter_rows())
    assert labels["query 0|0"] == "I" and labels["query 1|3"] == "E" and labels["query 0|2"] == "S" and labels["query 0|1"] == "C"
    product = ds.products.filter(pl.col("product_id") == "3").row(0, named=True)
    assert product["category"] == "Notebook" and product["color"] == "Black" and product["brand"] == "Brand"
    assert "operating temperature: 0 - 35" in product["bullets"] and "colour" not in product["bullets"]


def test_a_fold_seed_deals_other_balanced_folds_over_the_same_query_ids(tmp_path):
    folder = write_icecat_folder(tmp_path / "icecat")
    board = load_icecat(folder)  # cached first: a seeded load must not be served the board's folds
    seeded = load_icecat(folder, fold_seed="1")
    assert seeded.queries["query_id"].to_list() == board.queries["query_id"].to_list()
    assert seeded.queries["query"].to_list() == board.queries["query"].to_list()
    assert sorted(seeded.queries["fold"].value_counts()["count"]) == [2] * 5
    assert seeded.queries["fold"].to_list() != board.queries["fold"].to_list()
    assert "(fold seed 1)" in seeded.meta["protocol"] and "sha256 of the query text," in board.meta["protocol"]
    assert load_icecat(folder, fold_seed=1).queries["fold"].to_list() == seeded.queries["fold"].to_list()
    with pytest.raises(DatasetError, match="fold_seed=-1 must be 0"):
        load_icecat(folder, fold_seed=-1)


def test_missing_folder_says_where(tmp_path):
    with pytest.raises(DatasetError, match=f"icecat-chorus data not found at {tmp_path / 'nowhere'}; "):
        load_icecat(tmp_path / "nowhere")


def test_checksum_mismatch_is_an_error(tmp_path):
    folder = write_icecat_folder(tmp_path / "icecat")
    (folder / JUDGMENTS_FILE).write_text("query,docid,rating\nlaptop,1,3\n")
    with pytest.raises(DatasetError, match=f"sha256 mismatch for .*{JUDGMENTS_FILE}"):
        load_icecat(folder)


def test_lfs_pointer_is_detected(tmp_path):
    folder = write_icecat_folder(tmp_path / "icecat")
    (folder / PRODUCT_FILES[2]).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(DatasetError, match=f"{PRODUCT_FILES[2]} is a Git LFS pointer, not the data"):
        load_icecat(folder)


def test_bad_records_and_judgments_are_dropped_and_counted(tmp_path):
    records = [record(i) for i in range(8)]
    records[5] = record(5, title="  ", name="")  # blank title
    records += [{"name": "no id"}, record(9), record(2, title="a later duplicate")]  # after record 2 in zip 3
    rated = ("query,docid,rating\nlaptop,1,3\nlaptop,1,2\nlaptop,99,3\nlaptop,2,7\nlaptop,3,x\n   ,4,1\n"
             "laptop,5,2\nmouse,6,0\n")
    ds = load_icecat(write_icecat_folder(tmp_path / "icecat", records, rated))
    assert ds.meta["dropped"] == {
        "record_without_id": 1, "blank_title": 1, "duplicate_product_id": 1, "invalid_rating": 2,
        "blank_query": 1, "duplicate_judgment": 1, "judgment_unknown_product": 2,
    }
    assert ds.products.filter(pl.col("product_id") == "2")["title"].to_list() == ["Brand M2 laptop"]
    assert ds.judgments.height == 2 and ds.queries.height == 2


def test_non_utf8_bytes_in_the_judgments_are_replaced_and_counted(tmp_path):
    rated = b"query,docid,rating\ncaf\xe9 laptop,1,3\nlaptop,2,2\n"
    ds = load_icecat(write_icecat_folder(tmp_path / "icecat", rated=rated))
    assert ds.meta["repaired"]["non_utf8_judgment_lines"] == 1
    assert "caf\ufffd laptop" in ds.queries["query"].to_list()


def test_missing_judgment_columns_are_named(tmp_path):
    folder = write_icecat_folder(tmp_path / "icecat", rated="query,doc,score\nlaptop,1,3\n")
    with pytest.raises(DatasetError, match=rf"{JUDGMENTS_FILE}: missing columns \['docid', 'rating'\]"):
        load_icecat(folder)
