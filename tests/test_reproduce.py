"""benchmarks/reproduce.py: a board row is rerun with the torch thread count it was made with."""

from __future__ import annotations

import json

import polars as pl


def test_a_rows_thread_count_comes_from_its_meta_json_unless_overridden(load_benchmark, tmp_path):
    reproduce = load_benchmark("reproduce")
    (tmp_path / "meta.json").write_text(json.dumps({"versions": {"torch": "2.13.0", "torch_threads": "1"}}))
    assert reproduce.row_threads(tmp_path, None) == ("1", "the row's meta.json")
    assert reproduce.row_threads(tmp_path, 3) == ("3", "--threads")
    threads, source = reproduce.row_threads(tmp_path / "made-before-meta-json", None)
    assert threads is None and "not recorded" in source


def test_a_rerun_runs_with_the_rows_thread_count(load_benchmark, tmp_path):
    from retrieval_zoo.reports import read_leaderboard

    reproduce = load_benchmark("reproduce")
    metrics = reproduce.rerun_row("simshop-tiny", "bm25", "default", "1", tmp_path)
    [run_dir] = read_leaderboard(tmp_path).filter(pl.col("model") == "bm25")["run_dir"].to_list()
    meta = json.loads((tmp_path / run_dir / "meta.json").read_text())
    assert meta["versions"]["torch_threads"] == "1"
    assert 0 < metrics["ndcg@10"] <= 1
