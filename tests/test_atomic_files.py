"""Whole-file writes: the target is replaced only by a complete file, and no temporary file is left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval_zoo import atomic_files


def test_write_json_replaces_the_target_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_files.write_json(path, {"b": 1})
    atomic_files.write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_replacing_keeps_the_suffix_for_writers_that_choose_the_format_by_name(tmp_path):
    path = tmp_path / "vectors.npy"
    with atomic_files.replacing(path) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))  # np.save appends ".npy" to any other name
    assert np.array_equal(np.load(path), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.npy"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "vectors.npy"
    np.save(path, np.zeros(2))
    with pytest.raises(RuntimeError, match="disk full"), atomic_files.replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert np.array_equal(np.load(path), np.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.npy"]
