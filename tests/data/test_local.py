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
    pl.DataFrame({"query_id": [7, 8], "query": ["x", "y"], "split": ["Validation", "test"]}).write_parquet(
        folder / "queries.parquet")
    pl.DataFrame({"query_id": [7, 7, 7, 8], "product_id": [1, 2, 3, 1], "label": [3, 1, 0, 2]}).write_parquet(
        folder / "judgments.parquet")
    (folder / "meta.json").write_text(json.dumps({"name": "myshop", "protocol": "my own split"}))
    ds = load_local(str(folder))
    assert ds.name == "myshop" and ds.meta["protocol"] == "my own split"
    assert ds.products.schema["product_id"] == pl.Utf8 and "price" in ds.products.columns
    assert ds.queries["split"].to_list() == ["valid", "test"]
    assert ds.judgments["label"].to_list() == ["E", "C", "I", "S"]


def test_bad_rows_are_dropped_and_counted(folder):
    append(folder / "products.csv", "p01,duplicate of p01,,,,,\np11,   ,,,,,\n")
    append(folder / "queries.csv", "q5,  ,test\nq1,again,train\nq6,no judgments,test\n")
    append(folder / "judgments.csv", "q1,p01,E\nq1,p03,\nq9,p01,E\nq2,p99,S\nq5,p01,E\n")
    dropped = load_local(folder).meta["dropped"]
    assert dropped == {
        "blank_product_id": 0, "blank_title": 1, "duplicate_product_id": 1, "blank_query_id": 0, "blank_query": 1,
        "duplicate_query_id": 1, "judgment_blank_id": 0, "blank_label": 1, "duplicate_judgment": 1,
        "judgment_unknown_query": 2, "judgment_unknown_product": 1, "query_without_judgments": 1,
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


# -- issue 24: the loader hardened against bad input ----------------------------------------------------------
def one_line_error(folder: Path, match: str) -> str:
    with pytest.raises(DatasetError, match=match) as caught:
        load_local(folder)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


@pytest.mark.reliability
def test_ids_are_trimmed_and_blank_ids_dropped_never_kept(folder):
    append(folder / "products.csv", " p11 ,Espresso cups,,,,,\n,Nameless product,,,,,\n   ,Another,,,,,\n")
    append(folder / "queries.csv", " q5\t,espresso cups,test\n,no id,test\n")
    append(folder / "judgments.csv", " q5 , p11 ,E\n,p01,E\nq3,,S\n")
    ds = load_local(folder)
    ids = ds.products["product_id"].to_list()
    assert "p11" in ids and None not in ids and "" not in ids and ds.products.height == 11
    assert "q5" in ds.queries["query_id"].to_list() and ds.queries["query_id"].null_count() == 0
    assert ds.judgments.filter(pl.col("query_id") == "q5")["product_id"].to_list() == ["p11"]
    assert ds.judgments["query_id"].null_count() == 0 and ds.judgments["product_id"].null_count() == 0
    dropped, repaired = ds.meta["dropped"], ds.meta["repaired"]
    assert (dropped["blank_product_id"], dropped["blank_query_id"], dropped["judgment_blank_id"]) == (2, 1, 2)
    assert (repaired["trimmed_id_products"], repaired["trimmed_id_queries"], repaired["trimmed_id_judgments"]) == (
        1, 1, 1)


@pytest.mark.reliability
def test_no_judgment_left_is_an_error_naming_the_counts(folder):
    (folder / "judgments.csv").write_text("query_id,product_id,label\nq1,x01,E\nq3,x02,E\nq4,,E\n")
    message = one_line_error(folder, "no judgment left")
    assert "all 3 rows of judgments.csv were dropped (2 unknown product, 1 blank id)" in message
    (folder / "judgments.csv").write_text("query_id,product_id,label\n")
    one_line_error(folder, "judgments.csv has no rows")


@pytest.mark.reliability
def test_no_test_query_left_is_an_error_naming_the_counts(folder):
    judgments = (folder / "judgments.csv").read_text().splitlines()
    (folder / "judgments.csv").write_text("\n".join(j for j in judgments if not j.startswith(("q3", "q4"))) + "\n")
    message = one_line_error(folder, "no test query left")
    assert "queries.csv has 2 test queries; dropped queries: 2 no judgments" in message


@pytest.mark.reliability
def test_csv_parse_errors_name_the_file_and_line(folder):
    (folder / "products.csv").write_text("")
    one_line_error(folder, r"products.csv: empty file; it needs a header row")
    shutil.copy(EXAMPLE / "products.csv", folder / "products.csv")
    (folder / "judgments.csv").write_text('query_id,product_id,label\nq1,p01,E\nq1,"p02,E\nq3,p07,E\n')
    one_line_error(folder, r"judgments.csv: cannot parse the CSV \(line 3: a quoted field opened on this line "
                           r"is never closed\)")
    (folder / "judgments.csv").write_text("query_id,product_id,label\nq1,p01,E\nq3,p07,E\nq3,p08,C,extra\n")
    one_line_error(folder, r"judgments.csv: cannot parse the CSV \(line 4: 4 fields, the header has 3\)")


@pytest.mark.reliability
def test_a_test_split_judged_only_irrelevant_is_an_error(folder):
    text = (folder / "judgments.csv").read_text().splitlines()
    relabelled = [line[:-1] + "I" if line.startswith(("q3,", "q4,")) else line for line in text]
    (folder / "judgments.csv").write_text("\n".join(relabelled) + "\n")
    message = one_line_error(folder, "no test query has a relevant judgment")
    assert "2 test queries, 7 judgments, all I" in message


@pytest.mark.reliability
def test_unknown_labels_are_an_error_and_graded_scales_an_option(folder):
    grades = {"E": "4", "S": "2", "C": "1", "I": "0"}
    text = (folder / "judgments.csv").read_text().splitlines()
    (folder / "judgments.csv").write_text("\n".join([text[0]] + [line[:-1] + grades[line[-1]] for line in text[1:]])
                                          + "\n")
    message = one_line_error(folder, r'5 judgments with a label outside label_scale "esci" \(\[\'4\'\]\)')
    assert "'4' x5, '1' x5" in message and '"0-4" = 4,3->E' in message and "label_scale" in message
    (folder / "meta.json").write_text(json.dumps({"label_scale": "0-4"}))
    ds = load_local(folder)
    assert ds.judgments.height == 15 and ds.judgments["label"].value_counts().sort("label").rows() == [
        ("C", 5), ("E", 5), ("I", 4), ("S", 1)]
    (folder / "meta.json").write_text(json.dumps({"label_scale": {"4": "E", "2": "E", "1": "I", "0": "I"}}))
    assert load_local(folder).judgments["label"].value_counts().sort("label").rows() == [("E", 6), ("I", 9)]
    (folder / "meta.json").write_text(json.dumps({"label_scale": {"4": "perfect"}}))
    one_line_error(folder, r'"label_scale" maps "4" to "perfect"')


@pytest.mark.reliability
def test_drops_and_repairs_are_printed_as_one_summary_line(folder, capsys):
    load_local(EXAMPLE)
    assert capsys.readouterr().out == ""
    append(folder / "products.csv", ",no id,,,,,\n")
    append(folder / "judgments.csv", "q1,p99,E\nq2,p98,S\n,p01,E\nq3,p09, S \n")
    ds = load_local(folder)
    assert capsys.readouterr().out == (
        f"local:path={folder}: dropped 3 judgments (2 unknown product, 1 blank id), 1 product (blank id); "
        f"repaired 1 label (trimmed)\n")
    assert ds.meta["dropped"]["judgment_unknown_product"] == 2 and ds.meta["repaired"]["trimmed_label"] == 1


@pytest.mark.reliability
def test_meta_values_are_type_checked(folder):
    (folder / "meta.json").write_text(json.dumps({"fully_judged": "false"}))
    one_line_error(folder, r'meta.json: "fully_judged" is "false" \(a string\); expected a JSON boolean')
    (folder / "meta.json").write_text(json.dumps({"cv_folds": True}))
    one_line_error(folder, r'"cv_folds" is true \(a boolean\); expected an integer')
    (folder / "meta.json").write_text(json.dumps({"label_scale": "1-5"}))
    one_line_error(folder, r'"label_scale" is "1-5"; expected "esci"')
    (folder / "meta.json").write_text(json.dumps({"fully_judged": True, "name": "mine"}))
    ds = load_local(folder)
    assert ds.meta["fully_judged"] is True and ds.name == "mine"
