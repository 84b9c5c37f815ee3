"""``prepare`` (data/prepare.py): which names it accepts, what it fetches, and the by-hand instructions when it
cannot. No network: downloads are stubbed or read from file:// URLs (through pooch, as real ones are)."""

from __future__ import annotations

import hashlib
import json
import urllib.error

import pytest

from retrieval_zoo.data import prepare as prepare_module
from retrieval_zoo.data.checks import LFS_POINTER_PREFIX, cached_sha256
from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.prepare import download_file, fetch_missing, prepare


class _Made(list):
    """The URLs downloaded, in order, and (``.hashes``) the known hash each was checked against."""

    def __init__(self):
        super().__init__()
        self.hashes: list[str | None] = []


URLS = {"a.parquet": "https://example.org/data/a.parquet", "b.parquet": "https://example.org/data/b.parquet"}
POINTER = LFS_POINTER_PREFIX + b"\noid sha256:abc\nsize 123\n"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "cache"))  # the checksum memo lives there


@pytest.fixture
def downloads(monkeypatch):
    """Record the downloads instead of making them; each writes a small real file."""
    made = _Made()

    def fake(url, destination, known_hash=None):
        made.append(url)
        made.hashes.append(known_hash)
        destination.write_bytes(b"PAR1 data")


    monkeypatch.setattr(prepare_module, "download_file", fake)
    return made


def test_unknown_name_lists_the_preparable_datasets():
    with pytest.raises(DatasetError, match="cannot prepare 'simshop'; preparable datasets: esci, sqid, icecat, local"):
        prepare("simshop")


def test_local_needs_a_path():
    with pytest.raises(DatasetError, match=r"prepare\('local'\) needs path="):
        prepare("local")


def test_download_flag_must_be_a_boolean():
    with pytest.raises(DatasetError, match="download='maybe' must be true or false"):
        prepare("esci", download="maybe")


def test_nothing_is_fetched_when_every_file_is_there(tmp_path, downloads):
    for name in URLS:
        (tmp_path / name).write_bytes(b"PAR1 real data")
    assert fetch_missing(tmp_path, URLS, download=True, how_to="by hand") == []
    assert downloads == []


def test_missing_files_and_lfs_pointers_are_downloaded(tmp_path, downloads):
    (tmp_path / "a.parquet").write_bytes(POINTER)  # a clone without git lfs left only the stub
    fetched = fetch_missing(tmp_path / "raw", URLS, download=True, how_to="by hand")  # folder is created
    assert fetched == [tmp_path / "raw" / "a.parquet", tmp_path / "raw" / "b.parquet"]
    assert downloads == list(URLS.values())
    downloads.clear()
    fetched = fetch_missing(tmp_path, URLS, download=True, how_to="by hand")
    assert fetched == [tmp_path / "a.parquet", tmp_path / "b.parquet"] and downloads == list(URLS.values())


def test_without_downloads_the_error_says_what_to_fetch_and_where(tmp_path, downloads):
    (tmp_path / "a.parquet").write_bytes(b"PAR1 real data")
    with pytest.raises(DatasetError) as error:
        fetch_missing(tmp_path, URLS, download=False, how_to="or `git lfs pull`")
    message = str(error.value)
    assert downloads == []
    assert "could not get 1 file(s)" in message and "or `git lfs pull`" in message
    assert URLS["b.parquet"] in message and str(tmp_path / "b.parquet") in message
    assert "downloads disabled" in message and URLS["a.parquet"] not in message


def test_a_failed_download_is_reported_with_its_reason(tmp_path, monkeypatch):
    def offline(url, destination, known_hash=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(prepare_module, "download_file", offline)
    with pytest.raises(DatasetError, match=r"could not get 2 file\(s\)(.|\n)*no route to host"):
        fetch_missing(tmp_path, URLS, download=True, how_to="by hand")


def test_download_file_streams_to_the_destination(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 5000)
    destination = tmp_path / "out" / "data.bin"
    destination.parent.mkdir()
    download_file(source.as_uri(), destination)
    assert destination.read_bytes() == b"x" * 5000
    assert not (tmp_path / "out" / "data.bin.part").exists()


def test_download_file_refuses_an_lfs_pointer_and_leaves_nothing(tmp_path):
    source = tmp_path / "pointer"
    source.write_bytes(POINTER)
    destination = tmp_path / "data.parquet"
    with pytest.raises(DatasetError, match="Git LFS pointer"):
        download_file(source.as_uri(), destination)
    assert not destination.exists() and not (tmp_path / "data.parquet.part").exists()
    with pytest.raises(DatasetError, match="Git LFS pointer"):  # said before pooch's hash mismatch
        download_file(source.as_uri(), destination, known_hash="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pointer"]


def test_prepare_esci_without_files_or_downloads_lists_the_official_files(tmp_path):
    from retrieval_zoo.data import esci

    with pytest.raises(DatasetError, match=r"could not get 2 file\(s\)") as error:
        prepare("esci", path=tmp_path, download="false")  # strings accepted, as from the command line
    for name, url in esci.DOWNLOAD_URLS.items():
        assert url in str(error.value) and str(tmp_path / name) in str(error.value)


def test_a_single_recorded_sum_is_checked_as_the_file_arrives(tmp_path, downloads):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'a' * 64}  a.parquet\n{'b' * 64}  b.parquet\n{'c' * 64}  b.parquet\n")
    fetch_missing(tmp_path / "raw", URLS, download=True, how_to="by hand", sums_file=sums)
    assert downloads.hashes == ["a" * 64, None]  # b.parquet has two published versions: the loader checks it


def test_download_file_checks_the_known_hash_and_remembers_it(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"y" * 3000)
    digest = hashlib.sha256(b"y" * 3000).hexdigest()
    destination = tmp_path / "out" / "data.bin"
    download_file(source.as_uri(), destination, known_hash=digest)  # the folder is created
    assert destination.read_bytes() == b"y" * 3000
    memo = json.loads((tmp_path / "cache" / "checksums.json").read_text())
    assert list(memo.values()) == [digest] and cached_sha256(destination) == digest  # not hashed a second time


def test_download_file_with_a_wrong_hash_leaves_nothing(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"corrupt")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="(?i)hash"):
        download_file(source.as_uri(), out / "data.bin", known_hash="0" * 64)
    assert list(out.iterdir()) == []  # no destination, no temporary file, no staging folder


def test_a_downloaded_file_replaces_an_lfs_pointer_and_a_failed_one_keeps_it(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"PAR1 real")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.parquet").write_bytes(POINTER)
    urls = {"a.parquet": source.as_uri()}
    missing = {"a.parquet": (tmp_path / "absent.bin").as_uri()}
    with pytest.raises(DatasetError, match=r"could not get 1 file\(s\)") as error:
        fetch_missing(raw, missing, download=True, how_to="by hand")
    reason_line = str(error.value).splitlines()[2]  # URL line, then "-> destination (reason)" on one line
    assert str(raw / "a.parquet") in reason_line and "No such file" in reason_line
    assert (raw / "a.parquet").read_bytes() == POINTER and sorted(p.name for p in raw.iterdir()) == ["a.parquet"]
    assert fetch_missing(raw, urls, download=True, how_to="by hand") == [raw / "a.parquet"]
    assert (raw / "a.parquet").read_bytes() == b"PAR1 real" and sorted(p.name for p in raw.iterdir()) == ["a.parquet"]


def test_an_unknown_url_scheme_is_a_reported_failure(tmp_path):
    with pytest.raises(DatasetError, match=r"gopher://x/a.parquet\n    -> .*a.parquet   \(Unrecognized URL protocol"):
        fetch_missing(tmp_path, {"a.parquet": "gopher://x/a.parquet"}, download=True, how_to="by hand")


def test_prepare_esci_checks_its_downloads_against_the_recorded_sums(tmp_path, downloads):
    from retrieval_zoo.data import esci
    from retrieval_zoo.data.checks import read_sha256sums, recorded_sums_file

    with pytest.raises(DatasetError):  # the stub downloads are no parquet: the loader refuses them
        prepare("esci", path=tmp_path)
    recorded = read_sha256sums(recorded_sums_file("esci"))
    assert downloads == list(esci.DOWNLOAD_URLS.values())
    assert downloads.hashes == [next(iter(recorded[name])) for name in esci.DOWNLOAD_URLS]
