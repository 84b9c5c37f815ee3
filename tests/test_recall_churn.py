"""benchmarks/recall_churn.py: the judged items behind a Recall@K mean over queries."""

from __future__ import annotations

import polars as pl


def run(rows: dict[str, list[str]]) -> pl.DataFrame:
    """A ranked run: each query's documents in rank order (scores descending)."""
    return pl.DataFrame([{"q_id": q, "doc_id": d, "score": float(len(docs) - i)}
                         for q, docs in rows.items() for i, d in enumerate(docs)])


def test_more_items_found_can_still_lower_the_mean_over_queries(load_benchmark):
    churn = load_benchmark("recall_churn")
    exact = pl.DataFrame({"q_id": ["a"] * 2 + ["b"] * 4, "doc_id": ["a1", "a2", "b1", "b2", "b3", "b4"]})
    reference = run({"a": ["a1", "a2", "x"], "b": ["b1", "x", "y"]})       # a: 2/2, b: 1/4
    trained = run({"a": ["a1", "x", "a2"], "b": ["b1", "b2", "b3"]})       # a: 1/2 at k=2, b: 3/4
    items = churn.item_ranks(exact, reference, trained)
    summary = churn.churn(items, k=2)
    assert summary["reference_items_found"] == 3 and summary["run_items_found"] == 3
    summary = churn.churn(items, k=3)
    assert (summary["reference_items_found"], summary["run_items_found"]) == (3, 5)
    summary = churn.churn(items, k=2)
    assert summary["items_lost"] == 1 and summary["items_gained"] == 1  # a2 out, b2 in
    assert summary["reference_recall_mean_over_queries"] == (1.0 + 0.25) / 2
    assert summary["run_recall_mean_over_queries"] == (0.5 + 0.5) / 2
    assert summary["weight_lost"] == 0.5 / 2 and summary["weight_gained"] == 0.25 / 2
    moved = churn.moved(items, k=2)
    assert moved.select("doc_id", "change").rows() == [("b2", "gained"), ("a2", "lost")]
    assert items.filter(pl.col("doc_id") == "b4")["run"].to_list() == [None]  # never retrieved


def test_training_pressure_finds_mined_negatives_and_judgments_of_train_queries_only(load_benchmark):
    from types import SimpleNamespace

    import numpy as np

    churn = load_benchmark("recall_churn")
    lists = {0: np.array([2, 1]), 1: np.array([0]), 2: np.array([2])}  # unit 2 is a test unit: never counted
    units = SimpleNamespace(texts=["tv", "dvd player", "head set"], query_ids=["q0", "q1", "q2"],
                            indices_of_split=lambda split: np.array([0, 1]))
    datamodule = SimpleNamespace(units=units, catalog=SimpleNamespace(product_ids=["p0", "p1", "p2"]),
                                 hard_negatives=SimpleNamespace(of=lambda unit: lists[unit]))
    dataset = SimpleNamespace(
        queries=pl.DataFrame({"query_id": ["q0", "q1", "q2"], "query": ["tv", "dvd player", "head set"]}),
        judgments=pl.DataFrame({"query_id": ["q1", "q2"], "product_id": ["p2", "p2"], "label": ["I", "E"]}))
    found = churn.pressure(datamodule, dataset, ["p2"])
    assert found.rows() == [("dvd player", "p2", "judged I"), ("tv", "p2", "mined negative")]
    assert churn.pressure(datamodule, dataset, ["p1"]).rows() == [("tv", "p1", "mined negative")]
