"""The dataset registry (data/registry.py): spec strings with parameters, loading by name, and the folders it
points at (each overridable from the environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval_zoo.data import esci, registry, sqid
from retrieval_zoo.data.dataset import DatasetError
from retrieval_zoo.data.registry import (
    dataset_description,
    list_datasets,
    load_dataset,
    parse_dataset_spec,
    register_dataset,
)


@pytest.fixture
def empty_registry(monkeypatch):
    monkeypatch.setattr(registry, "_DATASETS", {})


def test_the_package_registers_its_datasets():
    import retrieval_zoo.data  # noqa: F401 - registers the datasets

    names = list_datasets()
    assert names == sorted(names)
    assert {"simshop", "simshop-tiny", "esci", "sqid", "icecat", "local"} <= set(names)
    assert "tests" in dataset_description("simshop-tiny")


@pytest.mark.parametrize("spec, expected", [
    ("simshop", ("simshop", {})),
    ("simshop:", ("simshop", {})),
    ("simshop:preference_strength=0", ("simshop", {"preference_strength": "0"})),
    ("local: path = /data/shop , split_seed=3,", ("local", {"path": "/data/shop", "split_seed": "3"})),
    ("x:a=b=c", ("x", {"a": "b=c"})),  # only the first '=' splits
])
def test_parse_dataset_spec(spec, expected):
    assert parse_dataset_spec(spec) == expected


def test_a_parameter_without_a_value_is_rejected():
    with pytest.raises(DatasetError, match="parameter 'fast' in 'simshop:fast' must look like key=value"):
        parse_dataset_spec("simshop:fast")


def test_load_dataset_merges_spec_and_keyword_parameters(empty_registry):
    calls = []
    register_dataset("fake", lambda **params: calls.append(params) or "loaded", "a stand-in loader")
    assert load_dataset("fake:a=1,b=2", b="3", c=4) == "loaded"
    assert calls == [{"a": "1", "b": "3", "c": 4}]  # keywords win over the spec
    assert list_datasets() == ["fake"] and dataset_description("fake") == "a stand-in loader"


def test_unknown_and_duplicate_names(empty_registry):
    register_dataset("b", lambda: None, "")
    register_dataset("a", lambda: None, "")
    with pytest.raises(DatasetError, match="unknown dataset 'c'; valid datasets: a, b"):
        load_dataset("c:x=1")
    with pytest.raises(DatasetError, match="unknown dataset 'c'"):
        dataset_description("c")
    with pytest.raises(ValueError, match="dataset 'a' is registered twice"):
        register_dataset("a", lambda: None, "")


def test_cache_dir_follows_the_environment_and_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "new" / "cache"))
    assert registry.cache_dir() == tmp_path / "new" / "cache"
    assert (tmp_path / "new" / "cache").is_dir()  # created on first use


def test_empty_cache_variable_means_the_default_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", "")
    assert registry.cache_dir() == tmp_path / ".cache" / "retrieval_zoo"
    for name in ("RETRIEVAL_ZOO_SHARED_DATA", "RETRIEVAL_ZOO_ESCI_DIR", "RETRIEVAL_ZOO_SQID_DIR"):
        monkeypatch.setenv(name, "")
    assert registry.shared_data_dir() == Path(registry.__file__).resolve().parents[3] / "shared" / "data"
    assert esci.esci_raw_dir() == tmp_path / ".cache" / "retrieval_zoo" / "esci" / "raw"
    assert sqid.sqid_raw_dir() == tmp_path / ".cache" / "retrieval_zoo" / "sqid" / "raw"


def test_raw_dirs_named_by_the_environment_leave_the_cache_folder_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_ZOO_CACHE", str(tmp_path / "never-made"))
    monkeypatch.setenv("RETRIEVAL_ZOO_ESCI_DIR", str(tmp_path / "esci"))
    monkeypatch.setenv("RETRIEVAL_ZOO_SQID_DIR", str(tmp_path / "sqid"))
    assert esci.esci_raw_dir() == tmp_path / "esci"
    assert sqid.sqid_raw_dir() == tmp_path / "sqid"
    assert not (tmp_path / "never-made").exists()


def test_shared_data_dir_default_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("RETRIEVAL_ZOO_SHARED_DATA", raising=False)
    package_parent = Path(registry.__file__).resolve().parents[2]  # the repository root
    assert registry.shared_data_dir() == package_parent.parent / "shared" / "data"
    monkeypatch.setenv("RETRIEVAL_ZOO_SHARED_DATA", str(tmp_path))
    assert registry.shared_data_dir() == tmp_path
