"""ESCI loader on small fixtures written in the exact schema (names and dtypes) of the official parquet files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrieval_zoo.data import esci
from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.esci import EXAMPLES_FILE, PRODUCTS_FILE, load_esci
from retrieval_zoo.data.prepare import prepare

EXAMPLES_SCHEMA = {
    "example_id": pl.Int64, "query": pl.Utf8, "query_id": pl.Int64, "product_id": pl.Utf8,
    "product_locale": pl.Utf8, "esci_label": pl.Utf8, "small_version": pl.Int64, "large_version": pl.Int64,
    "split": pl.Utf8,
}
PRODUCTS_SCHEMA = {
    "product_id": pl.Utf8, "product_title": pl.Utf8, "product_description": pl.Utf8,
    "product_bullet_point": pl.Utf8, "product_brand": pl.Utf8, "product_color": pl.Utf8,
    "product_locale": pl.Utf8,
}


def esci_products(n_us: int = 12) -> list[dict]:
    rows = [
        {
            "product_id": f"B{i:09d}", "product_title": f"Product {i} &amp; friends",
            "product_description": f"<p>Great <b>item</b> {i} &amp; more&nbsp;stuff</p><br/>", "product_bullet_point":
            f"fits size < 5 and > 3\n  <li>bullet {i}</li>", "product_brand": "Acme" if i % 2 else None,
            "product_color": "red", "product_locale": "us",
        }
        for i in range(n_us)
    ]
    rows.append({**rows[0], "product_locale": "es", "product_title": "Producto cero"})  # same id, other locale
    rows.append({**rows[1], "product_id": "E000000001", "product_locale": "es", "product_title": "Producto uno"})
    return rows


def esci_examples(n_train_queries: int = 4) -> list[dict]:
    """us: n_train_queries train queries + 2 test queries (3 judgments each); es: 1 train query."""
    rows = []
    labels = "ESCI"
    for q in range(n_train_queries + 2):
        split = "train" if q < n_train_queries else "test"
        for j in range(3):
            rows.append({
                "query": f"query {q}", "query_id": q, "product_id": f"B{(q + j) % 12:09d}", "product_locale": "us",
                "esci_label": labels[(q + j) % 4], "small_version": 1, "large_version": 1, "split": split,
            })
    rows.append({**rows[0], "small_version": 0, "product_id": "B000000011", "query_id": 0})  # large only
    rows.append({"query": "consulta", "query_id": 999, "product_id": "E000000001", "product_locale": "es",
                 "esci_label": "E", "small_version": 1, "large_version": 1, "split": "train"})
    return [{"example_id": i, **row} for i, row in enumerate(rows)]


def write_parquet(path: Path, rows: list[dict], schema: dict) -> None:
    pl.DataFrame(rows, schema=schema).write_parquet(path)


def write_esci_files(folder: Path, examples: list[dict] | None = None, products: list[dict] | None = None) -> Path:
    """The two official files (plus a SHA256SUMS of them, as a user's verified folder would have)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(folder / EXAMPLES_FILE, esci_examples() if examples is None else examples, EXAMPLES_SCHEMA)
    write_parquet(folder / PRODUCTS_FILE, esci_products() if products is None else products, PRODUCTS_SCHEMA)
    record_sums(folder, [EXAMPLES_FILE, PRODUCTS_FILE])
    return folder


def record_sums(folder: Path, names: list[str]) -> None:
    lines = [f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}" for name in names]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def raw(tmp_path) -> Path:
    return write_esci_files(tmp_path / "raw")


# -- the happy path ---------------------------------------------------------------------------------------
def test_loads_the_canonical_schema_with_protocol_meta(raw):
    ds = load_esci(raw)
    assert ds.products.height == 12  # the us catalogue only
    assert ds.queries.height == 6 and ds.queries.schema["query_id"] == pl.Utf8
    assert ds.judgments.height == 18  # the large-only row is not in the small version
    assert set(ds.queries.filter(pl.col("query_id").cast(pl.Int64) >= 4)["split"]) == {"test"}
    assert ds.meta["eval_protocols"] == ["full", "rerank"]
    assert ds.meta["label_source"] == "labels" and ds.meta["fully_judged"] is False
    assert "ESCI us small" in ds.meta["protocol"] and "S and C" in ds.meta["label_mapping"]
    assert ds.meta["gains"] == {"E": 100, "S": 10, "C": 1, "I": 0}
    assert all(count == 0 for count in ds.meta["dropped"].values())
    assert set(ds.products["category"]) == {""} and ds.products["shop_id"].null_count() == 12


def test_html_is_stripped_from_descriptions_and_bullets_but_titles_are_kept(raw):
    product = load_esci(raw).products.row(0, named=True)
    assert product["title"] == "Product 0 &amp; friends"
    assert product["description"] == "Great item 0 & more stuff"
    assert product["bullets"] == "fits size < 5 and > 3\nbullet 0"
    assert product["brand"] == ""  # null brand becomes empty text


def test_locale_version_and_catalogue_options(raw):
    assert load_esci(raw, locale="es").products["product_id"].to_list() == ["B000000000", "E000000001"]
    assert load_esci(raw, version="large").judgments.height == 19
    judged = load_esci(raw, catalogue="judged")
    assert set(judged.products["product_id"]) == set(judged.judgments["product_id"])


def test_valid_split_is_a_deterministic_carve_of_train_queries(tmp_path):
    raw = write_esci_files(tmp_path / "raw", examples=esci_examples(n_train_queries=400))
    first = load_esci(raw, valid_fraction="0.1", cache="false")
    second = load_esci(raw, valid_fraction=0.1, cache=False)
    assert first.queries.equals(second.queries)
    counts = dict(first.queries["split"].value_counts().iter_rows())
    assert counts["test"] == 2 and 20 < counts["valid"] < 60 and counts["train"] + counts["valid"] == 400


def test_prepared_dataset_is_cached_and_reused(raw, monkeypatch):
    first = load_esci(raw)
    monkeypatch.setattr(esci, "build_esci", lambda *a, **k: pytest.fail("rebuilt instead of using the cache"))
    assert load_esci(raw).products.equals(first.products)


# -- bad input --------------------------------------------------------------------------------------------
def test_unknown_locale_or_version_names_the_valid_values(raw):
    with pytest.raises(DatasetError, match="unknown locale 'fr'; valid values: us, es, jp"):
        load_esci(raw, locale="fr")
    with pytest.raises(DatasetError, match="unknown version 'medium'"):
        load_esci(raw, version="medium")


def test_unknown_split_value_in_the_file_is_an_error(tmp_path):
    examples = [{**row, "split": "dev"} if row["query_id"] == 1 else row for row in esci_examples()]
    raw = write_esci_files(tmp_path / "raw", examples=examples)
    with pytest.raises(DatasetError, match=r"split has values \['dev'\]"):
        load_esci(raw)


def test_git_lfs_pointer_is_detected_with_the_fix(raw):
    (raw / PRODUCTS_FILE).write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:2512444\nsize 1108857465\n"
    )
    with pytest.raises(DatasetError, match="is a Git LFS pointer, not the data: run `git lfs pull`") as error:
        load_esci(raw)
    assert "media.githubusercontent.com" in str(error.value) and str(raw / PRODUCTS_FILE) in str(error.value)


def test_missing_file_says_where_to_put_it(raw):
    (raw / EXAMPLES_FILE).unlink()
    with pytest.raises(DatasetError, match=f"{EXAMPLES_FILE} not found: download it from https://"):
        load_esci(raw)


def test_wrong_checksum_is_an_error(raw):
    lines = (raw / "SHA256SUMS").read_text().replace("  " + PRODUCTS_FILE, "").splitlines()
    (raw / "SHA256SUMS").write_text(f"{lines[0]}\n{'0' * 64}  {PRODUCTS_FILE}\n")
    with pytest.raises(DatasetError, match=f"sha256 mismatch for .*{PRODUCTS_FILE}"):
        load_esci(raw)


def test_missing_recorded_checksum_only_warns(raw):
    (raw / "SHA256SUMS").write_text("")
    with pytest.warns(UserWarning, match="no recorded sha256"):
        load_esci(raw)


def test_missing_columns_are_named_with_the_file(tmp_path):
    raw = write_esci_files(tmp_path / "raw")
    pl.read_parquet(raw / EXAMPLES_FILE).drop("esci_label", "split").write_parquet(raw / EXAMPLES_FILE)
    record_sums(raw, [EXAMPLES_FILE, PRODUCTS_FILE])
    with pytest.raises(DatasetError, match=rf"{EXAMPLES_FILE}: missing columns \['esci_label', 'split'\]"):
        load_esci(raw)


def test_wrong_column_types_are_named(tmp_path):
    raw = write_esci_files(tmp_path / "raw")
    frame = pl.read_parquet(raw / EXAMPLES_FILE)
    frame.with_columns(pl.col("small_version").cast(pl.Utf8)).write_parquet(raw / EXAMPLES_FILE)
    record_sums(raw, [EXAMPLES_FILE, PRODUCTS_FILE])
    with pytest.raises(DatasetError, match="wrong column types: small_version is String"):
        load_esci(raw)


def test_duplicate_product_ids_keep_the_first_and_are_counted(tmp_path):
    products = esci_products()
    products.insert(5, {**products[2], "product_title": "a later duplicate"})
    ds = load_esci(write_esci_files(tmp_path / "raw", products=products))
    assert ds.meta["dropped"]["duplicate_product_id"] == 1
    assert ds.products.filter(pl.col("product_id") == "B000000002")["title"].to_list() == ["Product 2 &amp; friends"]


def test_judgments_of_unknown_products_are_dropped_and_counted(tmp_path):
    examples = esci_examples()
    examples[0] = {**examples[0], "product_id": "NOPE000000"}
    ds = load_esci(write_esci_files(tmp_path / "raw", examples=examples))
    assert ds.meta["dropped"]["judgment_unknown_product"] == 1
    assert ds.judgments.height == 17


def test_blank_queries_and_titles_are_dropped_and_counted(tmp_path):
    examples = [{**row, "query": "   "} if row["query_id"] == 2 else row for row in esci_examples()]
    products = esci_products()
    products[3] = {**products[3], "product_title": " \t"}
    ds = load_esci(write_esci_files(tmp_path / "raw", examples=examples, products=products))
    dropped = ds.meta["dropped"]
    assert dropped["blank_query"] == 1 and dropped["judgment_of_blank_query"] == 3
    assert dropped["blank_title"] == 1 and "B000000003" not in ds.products["product_id"].to_list()
    assert dropped["judgment_unknown_product"] == 2  # the other queries' judgments of the blank-title product


def test_unknown_labels_and_duplicate_judgments_are_dropped_and_counted(tmp_path):
    examples = esci_examples()
    examples[1] = {**examples[1], "esci_label": "X"}
    examples.append({**examples[0], "example_id": 500})
    ds = load_esci(write_esci_files(tmp_path / "raw", examples=examples))
    assert ds.meta["dropped"]["unknown_label"] == 1 and ds.meta["dropped"]["duplicate_judgment"] == 1


@pytest.mark.parametrize("column", ["product_title", "product_description"])
def test_non_utf8_bytes_are_decoded_with_replacement_and_counted(tmp_path, column):
    raw = write_esci_files(tmp_path / "raw")
    table = pq.read_table(raw / PRODUCTS_FILE)
    values = table.column(column).cast(pa.binary()).to_pylist()
    values[4] = b"caf\xe9 \xff text"  # Latin-1 bytes in a UTF-8 column
    broken = pa.array(values, type=pa.binary()).view(pa.string())  # skips validation, like a bad writer
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, broken), raw / PRODUCTS_FILE)
    record_sums(raw, [EXAMPLES_FILE, PRODUCTS_FILE])
    ds = load_esci(raw)
    assert ds.meta["repaired"]["non_utf8_products_values"] == 1
    canonical = {"product_title": "title", "product_description": "description"}[column]
    assert ds.products[canonical][4] == "caf\ufffd \ufffd text"


# -- prepare("esci"): verify what is on disk, download what is missing --------------------------------------
def test_prepare_with_files_on_disk_builds_the_cache(raw, tmp_path):
    ds = prepare("esci", raw, locale="us")
    assert ds.name == "esci" and list((tmp_path / "cache" / "esci" / "prepared").iterdir())


def test_prepare_downloads_missing_files(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(esci, "DOWNLOAD_URLS", {name: (raw / name).as_uri() for name in esci.DOWNLOAD_URLS})
    target = tmp_path / "fresh"
    target.mkdir()
    (target / PRODUCTS_FILE).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n")
    (target / "SHA256SUMS").write_text((raw / "SHA256SUMS").read_text())
    ds = prepare("esci", str(target))
    assert ds.products.height == 12 and not list(target.glob("*.part"))


def test_failed_download_lists_the_files_to_fetch_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(esci, "DOWNLOAD_URLS", {name: f"file:///nowhere/{name}" for name in esci.DOWNLOAD_URLS})
    with pytest.raises(DatasetError, match="could not get 2 file") as error:
        prepare("esci", tmp_path / "raw")
    message = str(error.value)
    assert f"file:///nowhere/{EXAMPLES_FILE}\n    -> {tmp_path / 'raw' / EXAMPLES_FILE}" in message
    assert "git lfs pull" in message
    with pytest.raises(DatasetError, match="downloads disabled"):
        prepare("esci", tmp_path / "raw", download="false")
    with pytest.raises(DatasetError, match="cannot prepare 'nope'"):
        prepare("nope")


# -- evaluation protocols ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["bm25", "light_two_tower"])
def test_a_run_reports_task1_reranking_beside_full_retrieval(model, raw, tmp_path, capsys, recwarn):
    from retrieval_zoo.runner import run_benchmark

    overrides = [] if model == "bm25" else ["trainer.max_steps=5", "trainer.limit_val_batches=1"]
    [result] = run_benchmark(model, load_esci(raw), seeds=1, overrides=overrides, results_dir=tmp_path / "results",
                             wandb="disabled", progress=False, print_table=False)
    # the fixture's carved valid split has no positive pairs: the valid loss is skipped with our line, not
    # Lightning's "Total length of `list` across ranks is zero"
    assert ("limit_val_batches=1 skipped" in capsys.readouterr().err) == (model != "bm25")
    assert not [w for w in recwarn if "Total length" in str(w.message)]
    assert 0.0 <= result.metrics["rerank_ndcg"] <= 1.0 and 0.0 <= result.metrics["rerank_ndcg@10"] <= 1.0
    assert "rerank_ndcg" in pl.read_csv(tmp_path / "results" / "leaderboard.csv").columns
    assert "rerank_ndcg" in (tmp_path / "results" / "leaderboard.md").read_text()
