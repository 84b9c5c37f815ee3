"""Datasets identified by content (data/fingerprint.py): the folder fingerprint, its per-file cache, and the
board's dataset key."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from retrieval_zoo.data import fingerprint
from retrieval_zoo.data.fingerprint import dataset_key, folder_fingerprint, slug


def make_folder(root):
    (root / "sub").mkdir(parents=True)
    (root / "products.csv").write_text("id,title\n1,shoe\n")
    (root / "sub" / "queries.csv").write_text("id,query\n1,red shoe\n")
    return root


def test_fingerprint_by_hand(tmp_path):
    folder = make_folder(tmp_path / "shop")
    lines = ""
    for name, content in [("products.csv", b"id,title\n1,shoe\n"), ("sub/queries.csv", b"id,query\n1,red shoe\n")]:
        lines += f"{name}\0{len(content)}\0{hashlib.sha256(content).hexdigest()}\n"
    assert folder_fingerprint(folder) == hashlib.sha256(lines.encode()).hexdigest()


def test_same_content_anywhere_gives_the_same_fingerprint(tmp_path):
    first = make_folder(tmp_path / "a")
    second = tmp_path / "elsewhere" / "b"
    shutil.copytree(first, second)
    assert folder_fingerprint(first) == folder_fingerprint(second)
    assert folder_fingerprint(str(first) + "/") == folder_fingerprint(first)


def test_content_names_and_new_files_change_it_hidden_files_do_not(tmp_path):
    folder = make_folder(tmp_path / "shop")
    before = folder_fingerprint(folder)
    (folder / ".DS_Store").write_text("junk")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    assert folder_fingerprint(folder) == before
    (folder / "products.csv").write_text("id,title\n1,shoes\n")
    changed = folder_fingerprint(folder)
    assert changed != before
    (folder / "products.csv").rename(folder / "items.csv")
    assert folder_fingerprint(folder) not in {before, changed}


def test_a_single_file_is_hashed_alone(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"abc")
    expected = hashlib.sha256(f"data.parquet\x003\x00{hashlib.sha256(b'abc').hexdigest()}\n".encode()).hexdigest()
    assert folder_fingerprint(path) == expected


def test_the_cache_skips_rehashing_unchanged_files(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "shop")
    cache = tmp_path / "cache" / "fingerprints.json"
    hashed = []
    original = fingerprint._file_sha256
    monkeypatch.setattr(fingerprint, "_file_sha256", lambda path: hashed.append(path.name) or original(path))
    first = folder_fingerprint(folder, cache)
    assert sorted(hashed) == ["products.csv", "queries.csv"] and cache.exists()
    assert folder_fingerprint(folder, cache) == first and len(hashed) == 2  # both read from the cache
    (folder / "products.csv").write_text("id,title\n1,lamp and more\n")  # new size: hashed again
    folder_fingerprint(folder, cache)
    assert hashed[2:] == ["products.csv"]


def test_a_damaged_cache_is_ignored(tmp_path):
    folder = make_folder(tmp_path / "shop")
    cache = tmp_path / "fingerprints.json"
    cache.write_text("{not json")
    assert folder_fingerprint(folder, cache) == folder_fingerprint(folder)
    assert cache.read_text().startswith("{\"")  # rewritten whole


def test_dataset_key_without_a_folder_is_the_slug():
    assert dataset_key("simshop:preference_strength=0", {"preference_strength": "0"}, None) == \
        "simshop-preference_strength=0"
    assert dataset_key("esci", {}, "0123456789abcdef") == "esci"  # no path=: the fingerprint is not used


def test_dataset_key_of_a_folder_names_it_and_its_content(tmp_path):
    folder = tmp_path / "my shop"
    folder.mkdir()
    key = dataset_key(f"local:path={folder}/", {"path": f"{folder}/", "split_seed": "3", "group": "a"},
                      "0123456789abcdef")
    assert key == "local-my_shop-group=a_split_seed=3@01234567"
    # the same folder spelled differently is the same dataset
    assert dataset_key("local", {"path": str(folder / ".." / "my shop")}, "0123456789abcdef") == \
        "local-my_shop@01234567"


@pytest.mark.parametrize("spec, expected", [("simshop-tiny", "simshop-tiny"), ("local:path=/a b/c", "local-path=_a_b_c"),
                                            ("a:x=1,y=2", "a-x=1_y=2")])
def test_slug(spec, expected):
    assert slug(spec) == expected
