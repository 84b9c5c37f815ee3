"""The shared raw-data checks: LFS pointers, checksums, columns, UTF-8 repair, counted drops, parameters."""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrieval_zoo.data import checks
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset

POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:4a735b69\nsize 51286808\n"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "cache"))


def test_lfs_pointer_detection(tmp_path):
    (tmp_path / "pointer.parquet").write_text(POINTER)
    (tmp_path / "big.bin").write_bytes(POINTER.encode() + b"x" * 5000)  # real data that happens to start alike
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    assert checks.is_lfs_pointer(tmp_path / "pointer.parquet")
    assert not checks.is_lfs_pointer(tmp_path / "big.bin") and not checks.is_lfs_pointer(tmp_path / "data.csv")
    assert not checks.is_lfs_pointer(tmp_path / "absent")


def test_require_data_file_explains_the_fix(tmp_path):
    (tmp_path / "x.parquet").write_text(POINTER)
    with pytest.raises(DatasetError, match=r"x.parquet is a Git LFS pointer, not the data: run `git lfs pull` in "
                                           r"your esci-data clone or download the real file from https://e.x/x"):
        checks.require_data_file(tmp_path / "x.parquet", source_url="https://e.x/x", fix_hint="esci-data")
    with pytest.raises(DatasetError, match=r"y.csv not found: download it from https://e.x/y and put it at"):
        checks.require_data_file(tmp_path / "y.csv", source_url="https://e.x/y")


def write_sums(path, lines):
    path.write_text("# comment lines and blank lines are ignored\n\n" + "\n".join(lines) + "\n")


def test_verify_sha256_match_mismatch_and_missing(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"hello")
    digest = hashlib.sha256(b"hello").hexdigest()
    sums = tmp_path / "SHA256SUMS"
    write_sums(sums, [f"{'f' * 64}  data.bin", f"{digest}  data.bin"])  # either published version is fine
    assert checks.verify_sha256([data], sums, dataset="toy") == {"data.bin": digest}
    write_sums(sums, [f"{'0' * 64}  data.bin"])
    with pytest.raises(DatasetError, match="toy: sha256 mismatch for .*data.bin: got 2cf24dba"):
        checks.verify_sha256([data], sums, dataset="toy")
    write_sums(sums, [])
    with pytest.warns(UserWarning, match=f"no recorded sha256 for data.bin .*its sha256 is {digest}"):
        checks.verify_sha256([data], sums, dataset="toy")
    with pytest.warns(UserWarning, match="no recorded sha256"):
        checks.verify_sha256([data], None, dataset="toy")


def test_malformed_sums_file_is_an_error(tmp_path):
    write_sums(tmp_path / "SHA256SUMS", ["abc  data.bin"])
    with pytest.raises(DatasetError, match="malformed line 'abc  data.bin'"):
        checks.read_sha256sums(tmp_path / "SHA256SUMS")


def test_cached_sha256_notices_a_changed_file(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"one")
    assert checks.cached_sha256(data) == hashlib.sha256(b"one").hexdigest()
    data.write_bytes(b"three")  # a new size (and mtime) is a new memo key
    assert checks.cached_sha256(data) == hashlib.sha256(b"three").hexdigest()


def test_repository_sums_files_list_the_official_names():
    esci = checks.read_sha256sums(checks.recorded_sums_file("esci"))
    assert "shopping_queries_dataset_products.parquet" in esci
    sqid = checks.read_sha256sums(checks.recorded_sums_file("sqid"))
    assert len(sqid["product_features.parquet"]) == 2  # two published versions
    assert len(checks.read_sha256sums(checks.recorded_sums_file("icecat-chorus"))) == 8


def test_require_columns_names_missing_columns_and_wrong_types():
    schema = {"a": pl.Utf8, "b": pl.Int64}
    checks.require_columns(schema, {"a": checks.TEXT_TYPES, "b": checks.INTEGER_TYPES}, file="f.parquet")
    with pytest.raises(DatasetError, match=r"^f.parquet: missing columns \['c', 'd'\] \(has \['a', 'b'\]\)$"):
        checks.require_columns(schema, {"a": checks.TEXT_TYPES, "c": (), "d": ()}, file="f.parquet")
    with pytest.raises(DatasetError, match="f.parquet: wrong column types: b is Int64 .expected String"):
        checks.require_columns(schema, {"b": checks.TEXT_TYPES[:1]}, file="f.parquet")
    with pytest.raises(DatasetError, match="is not a readable parquet file"):
        checks.parquet_schema(__file__)


def test_decode_csv_bytes_replaces_and_counts_lines(tmp_path):
    (tmp_path / "ok.csv").write_text("a\nß\n")
    assert checks.decode_csv_bytes(tmp_path / "ok.csv") == ("a\nß\n".encode(), 0)
    (tmp_path / "bad.csv").write_bytes(b"a\n\xff\xfe\nok\ncaf\xe9\n")
    text, repaired = checks.decode_csv_bytes(tmp_path / "bad.csv")
    assert repaired == 2 and text.decode() == "a\n\ufffd\ufffd\nok\ncaf\ufffd\n"


def test_parquet_with_invalid_utf8_is_read_with_replacement(tmp_path):
    broken = pa.array([b"fine", b"bad \xff", None], type=pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": broken}), tmp_path / "bad.parquet")
    with pytest.raises(pl.exceptions.ComputeError, match="(?i)utf-8"):
        pl.read_parquet(tmp_path / "bad.parquet")  # why the fallback exists
    frame, repaired = checks.read_parquet_repairing_utf8(tmp_path / "bad.parquet", ["id", "text"],
                                                         pl.col("id") != "a")
    assert repaired == 1 and frame["text"].to_list() == ["bad \ufffd", None]


def test_drop_helpers_return_the_count():
    frame = pl.DataFrame({"id": ["a", "b", "b", "c", "d"], "text": ["x", " ", "y", None, "z"]})
    kept, n = checks.drop_blank(frame, "text")
    assert n == 2 and kept["id"].to_list() == ["a", "b", "d"]
    kept, n = checks.drop_duplicates(frame, "id")
    assert n == 1 and kept["text"].to_list() == ["x", " ", None, "z"]  # the first of each id
    kept, n = checks.drop_unknown(frame, "id", pl.Series(["a", "d"]))
    assert n == 3 and kept["id"].to_list() == ["a", "d"]
    kept, n = checks.drop_not_in(frame, "text", ["x", "y"])
    assert n == 3


def test_stable_unit_hash_is_fixed_across_runs_and_machines():
    assert checks.stable_unit_hash("abc") == pytest.approx(0.6858403315755376)
    assert checks.stable_unit_hash("abc", seed=1) == pytest.approx(0.9795660568660334)
    assert checks.unit_hashes(pl.Series(["abc"])).to_list() == [checks.stable_unit_hash("abc")]


def test_string_parameters_from_the_cli():
    assert checks.as_bool("False", "cache") is False and checks.as_bool("1", "cache") is True
    assert checks.as_float("0.05", "valid_fraction") == 0.05 and checks.as_int("3", "seed") == 3
    assert checks.as_choice(" US ", "locale", ("us", "es")) == "us"
    with pytest.raises(DatasetError, match="parameter cache='maybe' must be true or false"):
        checks.as_bool("maybe", "cache")
    with pytest.raises(DatasetError, match=r"must lie in \[0.0, 1.0\]"):
        checks.as_float("2", "valid_fraction")
    with pytest.raises(DatasetError, match="unknown locale 'fr'; valid values: us, es"):
        checks.as_choice("fr", "locale", ("us", "es"))


def tiny_dataset(name="tiny") -> ProductSearchDataset:
    return ProductSearchDataset(
        name=name,
        products=pl.DataFrame({"product_id": ["p"], "title": ["t"], "description": [""], "bullets": [""],
                               "brand": [""], "color": [""], "category": [""], "shop_id": [None]},
                              schema_overrides={"shop_id": pl.Utf8}),
        queries=pl.DataFrame({"query_id": ["q"], "query": ["x"], "split": ["test"], "group": [None]},
                             schema_overrides={"group": pl.Utf8}),
        judgments=pl.DataFrame({"query_id": ["q"], "product_id": ["p"], "label": ["E"]}),
    )


def test_load_or_build_caches_and_rebuilds_a_broken_cache(tmp_path):
    builds = []

    def build():
        builds.append(1)
        return tiny_dataset()

    folder = tmp_path / "prepared" / "key"
    checks.load_or_build(folder, build)
    assert checks.load_or_build(folder, build).name == "tiny" and len(builds) == 1
    (folder / "products.parquet").write_text("not parquet")
    with pytest.warns(UserWarning, match="ignoring the unreadable cached dataset"):
        checks.load_or_build(folder, build)
    assert len(builds) == 2
    checks.load_or_build(tmp_path / "off", build, enabled=False)
    assert len(builds) == 3 and not (tmp_path / "off").exists()
