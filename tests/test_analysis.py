"""Analysis of finished runs: per-query metrics with query text and label counts, ranked lists with titles and
labels, and paired comparisons of runs (ranx) against the first."""

from __future__ import annotations

import json

import polars as pl
import pytest

import retrieval_zoo as rz
from retrieval_zoo.evaluation import significance
from retrieval_zoo.runner import run_benchmark
from retrieval_zoo.significance import load_saved_run, saved_targets


@pytest.fixture(scope="module")
def tiny():
    return rz.load_dataset("simshop-tiny")


@pytest.fixture(scope="module")
def bm25_runs(tmp_path_factory):
    """BM25 as configured and with other k1/b, in two results folders (same model, variant and seed)."""
    root = tmp_path_factory.mktemp("analysis")
    runs = []
    for name, overrides in (("plain", None), ("flat", ["model.k1=0.5", "model.b=0.2"])):
        [result] = run_benchmark("bm25", "simshop-tiny", seeds=1, overrides=overrides, results_dir=root / name,
                                 wandb="disabled", progress=False, print_table=False, update_leaderboard=False)
        runs.append(result)
    return runs


def test_per_query_joins_metrics_with_query_text_group_and_label_counts(bm25_runs, tiny):
    result = bm25_runs[0]
    table = result.per_query()
    units = pl.read_parquet(result.run_dir / "units.parquet")
    assert table.height == units.height == result.metrics["n_queries"]
    assert table.columns[:9] == ["unit_id", "query_id", "query", "group", "n_E", "n_S", "n_C", "n_I", "n_ordered"]
    for metric in ("ndcg@10", "recall@100", "p_recall@100"):  # the per-query values average to the run's means
        assert table[metric].drop_nulls().mean() == pytest.approx(result.metrics[metric], abs=1e-12)
    row = table.row(0, named=True)
    assert row["query"] == tiny.queries.filter(pl.col("query_id") == row["query_id"])["query"][0]
    labels = tiny.judgments.filter(pl.col("query_id") == row["query_id"])["label"].value_counts()
    counts = dict(zip(labels["label"], labels["count"], strict=True))
    assert [row[f"n_{label}"] for label in "ESCI"] == [counts.get(label, 0) for label in "ESCI"]
    orders = tiny.interactions.filter((pl.col("search_id") == row["unit_id"]) & (pl.col("action") == "order"))
    assert row["n_ordered"] == orders["product_id"].n_unique()
    assert table.equals(rz.analysis.per_query(result.run_dir))  # a folder works as well as a RunResult


def test_ranked_lists_a_units_top_k_with_titles_and_labels(bm25_runs, tiny):
    result = bm25_runs[0]
    unit = pl.read_parquet(result.run_dir / "units.parquet").row(0, named=True)
    top = result.ranked(unit["unit_id"], k=7)
    assert top.columns == ["unit_id", "query", "rank", "product_id", "title", "score", "label", "ordered"]
    assert top["rank"].to_list() == list(range(1, 8)) and top["title"].null_count() == 0
    trec = pl.read_csv(result.run_dir / "run.trec", separator=" ", has_header=False,
                       new_columns=["q_id", "iter", "doc_id", "rank", "score", "tag"])
    assert top["product_id"].to_list() == trec.filter(pl.col("q_id") == unit["unit_id"])["doc_id"].to_list()[:7]
    judged = tiny.judgments.filter(pl.col("query_id") == unit["query_id"])
    labels = dict(zip(judged["product_id"], judged["label"], strict=True))
    assert top["label"].to_list() == [labels.get(p) for p in top["product_id"]]
    # a query id (or its text) gives every search of that query
    by_query = result.ranked(unit["query_id"], k=3)
    searches = pl.read_parquet(result.run_dir / "units.parquet").filter(pl.col("query_id") == unit["query_id"])
    assert by_query.height == 3 * searches.height
    assert by_query.equals(result.ranked(top["query"][0], k=3))
    with pytest.raises(KeyError, match="no evaluated unit"):
        result.ranked("no such query")


def test_compare_tests_each_run_against_the_first(bm25_runs):
    plain, flat = bm25_runs
    table = rz.compare([plain, flat.run_dir], metric="ndcg@10")
    assert table.columns == ["run", "dataset", "model", "variant", "seed", "ndcg@10", "delta", "p_value",
                             "significant"]
    assert table["run"].n_unique() == 2  # same model/variant/seed: told apart by their results folders
    assert table["ndcg@10"].to_list() == pytest.approx([plain.metrics["ndcg@10"], flat.metrics["ndcg@10"]],
                                                        abs=1e-9)
    first, second = table.row(0, named=True), table.row(1, named=True)
    assert first["delta"] is None and first["p_value"] is None
    assert second["delta"] == pytest.approx(flat.metrics["ndcg@10"] - plain.metrics["ndcg@10"], abs=1e-9)
    # the same paired test the leaderboard's significance columns use
    expected = significance(saved_targets(plain.run_dir), load_saved_run(plain.run_dir).run,
                            load_saved_run(flat.run_dir).run, "ndcg@10")
    assert second["p_value"] == pytest.approx(expected, rel=1e-9)
    assert second["significant"] == (expected < 0.05)
    recall = rz.compare([flat, plain], metric="recall@100")
    assert recall["recall@100"][0] == pytest.approx(json.loads((flat.run_dir / "metrics.json").read_text())
                                                    ["recall@100"], abs=1e-9)


def test_compare_refuses_what_it_cannot_pair(bm25_runs):
    with pytest.raises(ValueError, match="at least two runs"):
        rz.compare(bm25_runs[:1])
    with pytest.raises(ValueError, match="unknown metric"):
        rz.compare(bm25_runs, metric="ndcg@7")
