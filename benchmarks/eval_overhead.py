"""Evaluation overhead: the runner's search + metrics stage vs a bare faiss search + ranx evaluation.

Both sides get the same already-encoded vectors and the same judgments, in the same process and run:
- runner: ``index_and_search`` (faiss Flat) -> ``run_from_topk`` -> ``evaluate_run`` (every default metric,
  graded / exact / exact+substitute qrels, per-group means, per-query table);
- bare: ``faiss.IndexFlatIP`` search -> ranx ``Run``/``Qrels`` from dicts -> ``ranx.evaluate`` of the same metrics.
Target: runner / bare <= 1.3. Prints the timings and the ratio (median of repeats).

    python benchmarks/eval_overhead.py [--items 50000] [--queries 5000] [--k 500]
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np
import polars as pl
from ranx import Qrels, Run, evaluate

from retrieval_zoo.evaluation import (
    DEFAULT_METRICS,
    GAINS,
    METRICS,
    build_targets,
    evaluate_run,
    run_from_topk,
)
from retrieval_zoo.index import index_and_search


def make_problem(n_items: int, n_queries: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n_items, dim)).astype(np.float32)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    product_ids = [f"p{i}" for i in range(n_items)]
    unit_ids = [f"q{i}" for i in range(n_queries)]
    judged = rng.integers(0, n_items, size=(n_queries, 30))
    labels = rng.choice(list("ESCI"), size=(n_queries, 30), p=[0.4, 0.3, 0.1, 0.2])
    judgments = pl.DataFrame({"query_id": np.repeat(unit_ids, 30), "product_id": [product_ids[i] for i in judged.ravel()],
                              "label": labels.ravel()}).unique(["query_id", "product_id"])
    units = pl.DataFrame({"unit_id": unit_ids, "query_id": unit_ids,
                          "group": rng.choice(["a", "b"], n_queries).tolist()})
    return items, queries, product_ids, unit_ids, judgments, units


def runner_stage(items, queries, product_ids, unit_ids, judgments, units, k, metrics):
    result = index_and_search(items, queries, k)
    run = run_from_topk(unit_ids, product_ids, result.scores, result.indices)
    return evaluate_run(build_targets(judgments, units), run, metrics)[0]


def bare_stage(items, queries, product_ids, unit_ids, judgments, k, metrics):
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    scores, indices = index.search(queries, k)
    run = Run({q: {product_ids[i]: float(s) for i, s in zip(row_i, row_s, strict=True)}
               for q, row_i, row_s in zip(unit_ids, indices, scores, strict=True)})
    results = {}
    for kind, threshold in (("graded", 1), ("exact", GAINS["E"]), ("exact_sub", GAINS["S"])):
        rows = judgments.with_columns(pl.col("label").replace_strict(GAINS, return_dtype=pl.Int64).alias("g"))
        rows = rows.filter(pl.col("g") >= threshold)
        qrels_dict: dict[str, dict[str, int]] = {}
        for q, p, g in rows.select("query_id", "product_id", "g").iter_rows():
            qrels_dict.setdefault(q, {})[p] = g if kind == "graded" else 1
        wanted = [METRICS[m][0] for m in metrics if METRICS[m][1] == kind]
        scores = evaluate(Qrels(qrels_dict), run, wanted, make_comparable=True)
        results.update(scores if isinstance(scores, dict) else {wanted[0]: scores})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    problem = make_problem(args.items, args.queries, args.dim)
    metrics = [m for m in DEFAULT_METRICS if not m.startswith("p_")]
    items, queries, product_ids, unit_ids, judgments, units = problem
    runner_stage(items[:1000], queries[:10], product_ids[:1000], unit_ids[:10], judgments, units.head(10), 10,
                 metrics)  # warm the ranx JIT so neither side pays for compilation
    timings: dict[str, list[float]] = {"runner": [], "bare": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        ours = runner_stage(*problem, args.k, metrics)
        timings["runner"].append(time.perf_counter() - started)
        started = time.perf_counter()
        bare = bare_stage(items, queries, product_ids, unit_ids, judgments, args.k, metrics)
        timings["bare"].append(time.perf_counter() - started)
    same = all(abs(ours[m] - bare[METRICS[m][0]]) < 1e-9 for m in metrics if METRICS[m][1] == "graded")
    runner_s, bare_s = statistics.median(timings["runner"]), statistics.median(timings["bare"])
    print(f"catalogue {args.items:,} x {args.dim}, {args.queries:,} queries, k={args.k}, {len(metrics)} metrics")
    print(f"runner search+metrics: {runner_s:.2f} s   bare faiss+ranx: {bare_s:.2f} s   ratio: {runner_s / bare_s:.2f}x "
          f"(target <= 1.30)   graded metrics identical: {same}")


if __name__ == "__main__":
    main()
