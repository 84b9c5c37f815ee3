"""Metric conventions, pinned by hand-computed values and a golden test against pytrec_eval."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import ranx

from retrieval_zoo.evaluation import build_targets, evaluate_run, run_from_topk, significance, to_ranx_run

JUDGMENTS = pl.DataFrame({
    "query_id": ["q1", "q1", "q1", "q2", "q2", "q3"],
    "product_id": ["a", "b", "c", "c", "d", "e"],
    "label": ["E", "S", "C", "E", "I", "S"],
})
UNITS = pl.DataFrame({"unit_id": ["q1", "q2", "q3"], "query_id": ["q1", "q2", "q3"], "group": ["x", "x", "y"]})
PRODUCTS = ["a", "b", "c", "d", "e", "f"]
# rankings: q1 -> b, a, f ; q2 -> d, f, c ; q3 -> f, e, a
INDICES = np.array([[1, 0, 5], [3, 5, 2], [5, 4, 0]])
SCORES = np.array([[3.0, 2.0, 1.0]] * 3)


def _evaluate(metrics):
    targets = build_targets(JUDGMENTS, UNITS)
    run = run_from_topk(UNITS["unit_id"].to_list(), PRODUCTS, SCORES, INDICES)
    return evaluate_run(targets, run, metrics)


def test_ndcg_uses_esci_gains_with_linear_gain_and_log2_discount():
    means, per_query = _evaluate(["ndcg@10"])
    q1 = (10 / math.log2(2) + 100 / math.log2(3)) / (100 + 10 / math.log2(3) + 1 / math.log2(4))
    q2 = (100 / math.log2(4)) / 100
    q3 = (10 / math.log2(3)) / 10
    values = dict(zip(per_query["unit_id"], per_query["value"], strict=True))
    assert values["q1"] == pytest.approx(q1)
    assert values["q2"] == pytest.approx(q2)
    assert values["q3"] == pytest.approx(q3)
    assert means["ndcg@10"] == pytest.approx((q1 + q2 + q3) / 3)


def test_recall_counts_exact_only_and_skips_queries_without_exact_items():
    means, per_query = _evaluate(["recall@10", "recall_es@10", "mrr@10"])
    assert set(per_query.filter(pl.col("metric") == "recall@10")["unit_id"]) == {"q1", "q2"}  # q3 has no E
    assert means["recall@10"] == pytest.approx(1.0)
    assert means["recall_es@10"] == pytest.approx(1.0)
    assert means["mrr@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_relevance_rate_is_share_of_top_k_exact_or_substitute():
    means, _ = _evaluate(["rel@10"])
    # rel@10 divides by 10: q1 has a and b in its top 3, q2 has c, q3 has e
    assert means["rel@10"] == pytest.approx((2 / 10 + 1 / 10 + 1 / 10) / 3)


def test_group_means_are_reported():
    means, _ = _evaluate(["ndcg@10"])
    assert "ndcg@10[group=x]" in means and "ndcg@10[group=y]" in means


def test_unknown_metric_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid metrics: .*ndcg@10"):
        _evaluate(["ndcg@7"])


def test_golden_against_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(3)
    products = [f"p{i}" for i in range(60)]
    rows = []
    for q in range(25):
        for p in rng.choice(60, 15, replace=False):
            rows.append({"query_id": f"q{q}", "product_id": products[p], "label": "ESCI"[rng.integers(4)]})
    judgments = pl.DataFrame(rows)
    units = pl.DataFrame({"unit_id": [f"q{q}" for q in range(25)], "query_id": [f"q{q}" for q in range(25)],
                          "group": ["g"] * 25})
    scores = rng.normal(size=(25, 60)).astype(np.float32)
    order = np.argsort(-scores, axis=1)[:, :20]
    top = np.take_along_axis(scores, order, axis=1)
    run = run_from_topk(units["unit_id"].to_list(), products, top, order)
    means, _ = evaluate_run(build_targets(judgments, units), run, ["ndcg@10", "ndcg@100"])

    gains = {"E": 100, "S": 10, "C": 1, "I": 0}
    qrels: dict[str, dict[str, int]] = {}
    for r in rows:
        qrels.setdefault(r["query_id"], {})[r["product_id"]] = gains[r["label"]]
    qrels = {q: d for q, d in qrels.items() if any(d.values())}
    trec_run = {q: {products[i]: float(s) for i, s in zip(order[n], top[n], strict=True)}
                for n, q in enumerate(units["unit_id"]) if q in qrels}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10,100"})
    reference = evaluator.evaluate(trec_run)
    assert means["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in reference.values()]), abs=1e-9)
    assert means["ndcg@100"] == pytest.approx(np.mean([v["ndcg_cut_100"] for v in reference.values()]), abs=1e-9)


def test_significance_separates_a_perfect_run_from_a_random_one():
    rng = np.random.default_rng(0)
    products = [f"p{i}" for i in range(50)]
    units = pl.DataFrame({"unit_id": [f"q{q}" for q in range(40)], "query_id": [f"q{q}" for q in range(40)],
                          "group": ["g"] * 40})
    judgments = pl.DataFrame({"query_id": [f"q{q}" for q in range(40)], "product_id": [f"p{q}" for q in range(40)],
                              "label": ["E"] * 40})
    targets = build_targets(judgments, units)
    perfect = np.array([[q] + [i for i in range(50) if i != q][:9] for q in range(40)])
    shuffled = np.array([rng.permutation(50)[:10] for _ in range(40)])
    scores = np.tile(np.arange(10, 0, -1, dtype=np.float32), (40, 1))
    ids = units["unit_id"].to_list()
    p = significance(targets, run_from_topk(ids, products, scores, perfect),
                     run_from_topk(ids, products, scores, shuffled), "ndcg@10")
    assert p < 0.01


def test_tied_scores_rank_by_product_id_whatever_the_row_order():
    # q1's exact item "a" ties with "f" at the top: product-id order puts "a" first, so MRR is 1 on every run
    targets = build_targets(JUDGMENTS, UNITS)
    tied = pl.DataFrame({"q_id": ["q1"] * 3 + ["q2"] * 2, "doc_id": ["f", "a", "b", "f", "c"],
                         "score": [1.0, 1.0, 0.5, 2.0, 2.0]})
    for seed in range(5):
        shuffled = tied.sample(fraction=1.0, shuffle=True, seed=seed)
        means, _ = evaluate_run(targets, shuffled, ["mrr@10"])
        assert means["mrr@10"] == pytest.approx(1.0)
        # the Run the significance tests use ranks the same way
        ranx_mrr = ranx.evaluate(targets.ranx_qrels("exact"), to_ranx_run(shuffled), "mrr@10")
        assert ranx_mrr == pytest.approx(1.0)
