"""Metrics with ranx: recall, NDCG, MRR, relevance rate and personalised recall, overall and per query group.

Conventions (pinned by a golden test against pytrec_eval):
- NDCG uses the ESCI task-1 gains E = 1, S = 0.1, C = 0.01, I = 0, stored as the integers 100 / 10 / 1 / 0
  (ranx keeps integer relevance; NDCG is unchanged by a common scale), linear gains, log2 discount. The official
  ESCI script that swaps S and C is not followed: S (a substitute) outranks C (a complement), as in the paper.
- ``recall@K`` counts Exact items as relevant, ``recall_es@K`` Exact or Substitute; both are averaged over the
  queries that have at least one such item. ``mrr@10`` is the reciprocal rank of the first Exact item.
- ``rel@K`` (relevance rate) is the share of the top K that is Exact or Substitute: the analogue of MGDSPR's
  P_good and MRSE's relevance metric. Unjudged items count as not relevant (exact on fully judged data such
  as simshop, a lower bound on ESCI).
- ``p_recall@K`` (personalised recall): the share of the items the user ordered in a held-out search that
  appear in its top K (behaviour data only).
- Tied scores rank by product id (ascending), in the metrics and in the significance tests alike, so a run
  with ties (BM25's are common) scores the same on every machine and in every process.

Runs and judgments reach ranx as its numba typed lists (one [n, 2] array of doc id and score per query, the
input ``ranx.evaluate`` accepts besides Qrels/Run), built from the faiss top-K arrays without Python dicts;
significance tests use ranx ``Qrels``/``Run`` objects and ``ranx.compare``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import polars as pl
from numba import njit
from numba.typed import List as TypedList
from ranx import Qrels, Run, compare, evaluate

GAINS = {"E": 100, "S": 10, "C": 1, "I": 0}

# our name -> (ranx metric, qrels kind)
METRICS: dict[str, tuple[str, str]] = {
    **{f"recall@{k}": (f"recall@{k}", "exact") for k in (10, 100, 500)},
    **{f"recall_es@{k}": (f"recall@{k}", "exact_sub") for k in (10, 100, 500)},
    **{f"ndcg@{k}": (f"ndcg@{k}", "graded") for k in (10, 100)},
    "mrr@10": ("mrr@10", "exact"),
    **{f"rel@{k}": (f"precision@{k}-l10", "graded") for k in (10, 100)},
    **{f"p_recall@{k}": (f"recall@{k}", "personal") for k in (10, 100, 500)},
    "ndcg": ("ndcg", "graded"),
}
DEFAULT_METRICS = ["recall@10", "recall@100", "recall@500", "recall_es@100", "ndcg@10", "ndcg@100", "mrr@10",
                   "rel@10", "rel@100", "p_recall@100", "p_recall@500"]
HEADLINE_METRICS = ["recall@100", "recall_es@100", "ndcg@10", "mrr@10", "rel@10", "p_recall@100"]


def check_metrics(names: list[str]) -> None:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid metrics: {', '.join(METRICS)}")


@dataclass
class EvaluationTargets:
    """Relevance judgments of the evaluated units, per kind a frame (q_id, doc_id, score), and their groups."""

    qrels: dict[str, pl.DataFrame]
    groups: pl.DataFrame  # unit_id, group

    def ranx_qrels(self, kind: str) -> Qrels:
        return _frame_to_ranx(self.qrels[kind], Qrels, np.int64)


def _frame_to_ranx(frame: pl.DataFrame, cls, score_dtype) -> Qrels | Run:
    data = frame.select("q_id", "doc_id", "score").to_pandas()
    data["q_id"] = data["q_id"].astype(object)
    data["doc_id"] = data["doc_id"].astype(object)
    data["score"] = data["score"].astype(score_dtype)
    return cls.from_df(data, q_id_col="q_id", doc_id_col="doc_id", score_col="score")


def ranx_qrels(frame: pl.DataFrame) -> Qrels:
    """A (q_id, doc_id, score) frame as ranx Qrels (ranx wants object-typed id columns from pandas)."""
    return _frame_to_ranx(frame, Qrels, np.int64)


def build_targets(judgments: pl.DataFrame, units: pl.DataFrame, interactions: pl.DataFrame | None = None
                  ) -> EvaluationTargets:
    """``units``: unit_id, query_id, group of the evaluated units; judgments in the canonical schema.

    A search inherits the judgments of its query; ``interactions`` (behaviour data) give personalised targets.
    """
    graded = (
        units.select("unit_id", "query_id")
        .join(judgments, on="query_id")
        .select(pl.col("unit_id").alias("q_id"), pl.col("product_id").alias("doc_id"),
                pl.col("label").replace_strict(GAINS, return_dtype=pl.Int64).alias("score"))
    )
    kinds = {
        "graded": graded.filter(pl.col("score") > 0),
        "exact": graded.filter(pl.col("score") >= GAINS["E"]).with_columns(pl.lit(1, pl.Int64).alias("score")),
        "exact_sub": graded.filter(pl.col("score") >= GAINS["S"]).with_columns(pl.lit(1, pl.Int64).alias("score")),
    }
    if interactions is not None:
        kinds["personal"] = (
            interactions.filter(pl.col("action") == "order")
            .join(units.select("unit_id"), left_on="search_id", right_on="unit_id")
            .select(pl.col("search_id").alias("q_id"), pl.col("product_id").alias("doc_id"),
                    pl.lit(1, pl.Int64).alias("score"))
            .unique()
        )
    qrels = {kind: frame for kind, frame in kinds.items() if frame.height}
    return EvaluationTargets(qrels, units.select("unit_id", pl.col("group").fill_null("all")))


def run_from_topk(unit_ids: list[str], product_ids: list[str], scores: np.ndarray, indices: np.ndarray
                  ) -> pl.DataFrame:
    """Top-k results as a long frame (q_id, doc_id, score), best first; -1 indices (fewer than k items) dropped."""
    k = indices.shape[1]
    flat = indices.reshape(-1)
    valid = flat >= 0
    query_rows = np.repeat(np.arange(len(unit_ids)), k)[valid]
    return pl.DataFrame({
        "q_id": pl.Series(unit_ids, dtype=pl.Utf8).gather(query_rows),
        "doc_id": pl.Series(product_ids, dtype=pl.Utf8).gather(flat[valid]),
        "score": scores.reshape(-1)[valid].astype(np.float64),
    })


def to_ranx_run(frame: pl.DataFrame, name: str = "run") -> Run:
    """A ranx Run whose scores are minus the rank, ties ranked by product id as in ``evaluate_run``: ranx sorts
    with an unstable argsort, so tied scores would otherwise rank by row order."""
    ranked = frame.sort(["q_id", "score", "doc_id"], descending=[False, True, False]).with_columns(
        (-pl.int_range(pl.len()).over("q_id")).cast(pl.Float64).alias("score"))
    run = _frame_to_ranx(ranked, Run, np.float64)
    run.name = name
    return run


@njit(cache=True)
def _typed_list(ids: np.ndarray, values: np.ndarray, offsets: np.ndarray):
    out = TypedList()
    for i in range(len(offsets) - 1):
        lo, hi = offsets[i], offsets[i + 1]
        block = np.empty((hi - lo, 2), dtype=np.float64)
        block[:, 0] = ids[lo:hi]
        block[:, 1] = values[lo:hi]
        out.append(block)
    return out


def _ranx_lists(frame: pl.DataFrame, queries: pl.DataFrame, doc_codes: pl.DataFrame):
    """Rows of ``frame`` grouped per query in ``queries`` order, best score first, as a ranx typed list."""
    rows = (
        frame.join(doc_codes, on="doc_id", how="left")
        .join(queries, on="q_id")
        .sort(["position", "score", "code"], descending=[False, True, False])
    )
    counts = np.bincount(rows["position"].to_numpy(), minlength=queries.height)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return _typed_list(rows["code"].to_numpy().astype(np.float64), rows["score"].to_numpy().astype(np.float64),
                       offsets)


def evaluate_run(targets: EvaluationTargets, run_frame: pl.DataFrame, metrics: list[str] | None = None
                 ) -> tuple[dict[str, float], pl.DataFrame]:
    """Mean metrics (overall and ``metric[group=g]`` per query group) and a per-query table."""
    metrics = metrics or DEFAULT_METRICS
    check_metrics(metrics)
    # codes in product-id order: ranx breaks score ties by code, so tied items (common under BM25) rank by
    # product id on every run instead of by polars' hash order
    doc_ids = pl.concat([run_frame["doc_id"], *[q["doc_id"] for q in targets.qrels.values()]]).unique().sort()
    doc_codes = pl.DataFrame({"doc_id": doc_ids, "code": np.arange(len(doc_ids), dtype=np.int64)})
    means: dict[str, float] = {}
    per_query: list[pl.DataFrame] = []
    for kind, qrels in targets.qrels.items():
        wanted = {name: METRICS[name][0] for name in metrics if METRICS[name][1] == kind}
        if not wanted:
            continue
        # the queries that have judgments of this kind, the order ranx sees them in
        queries = qrels.select("q_id").unique(maintain_order=True).with_row_index("position")
        queries = queries.with_columns(pl.col("position").cast(pl.Int64))
        names = list(dict.fromkeys(wanted.values()))
        # ranx 0.3 returns per-query scores for a single metric under a wrong key; two names keep the dict form
        names = names * 2 if len(names) == 1 else names
        scores = evaluate(_ranx_lists(qrels, queries, doc_codes), _ranx_lists(run_frame, queries, doc_codes),
                          names, return_mean=False)
        for name, ranx_name in wanted.items():
            values = np.asarray(scores[ranx_name], dtype=np.float64)
            per_query.append(pl.DataFrame({"unit_id": queries["q_id"], "metric": name, "value": values}))
            means[name] = float(values.mean()) if len(values) else float("nan")
    table = pl.concat(per_query) if per_query else pl.DataFrame(
        schema={"unit_id": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64})
    means.update(_group_means(table, targets.groups))
    means["n_queries"] = float(targets.groups.height)
    return means, table


def _group_means(per_query: pl.DataFrame, groups: pl.DataFrame) -> dict[str, float]:
    if groups["group"].n_unique() < 2:
        return {}
    # a fixed row order within each group: a float sum depends on its order, and the join's order varies
    joined = per_query.join(groups, on="unit_id").sort("metric", "group", "unit_id")
    grouped = joined.group_by("metric", "group", maintain_order=True).agg(pl.col("value").mean())
    return {f"{row['metric']}[group={row['group']}]": row["value"] for row in grouped.iter_rows(named=True)}


def significance(targets: EvaluationTargets, run_a: pl.DataFrame, run_b: pl.DataFrame, metric: str,
                 group: str | None = None, stat_test: str = "student") -> float:
    """Two-sided p-value (ranx.compare, paired over queries) that runs a and b differ on ``metric``."""
    ranx_name, kind = METRICS[metric]
    qrels = targets.qrels[kind]
    if group is not None:
        members = targets.groups.filter(pl.col("group") == group)["unit_id"].implode()
        qrels = qrels.filter(pl.col("q_id").is_in(members))
        run_a = run_a.filter(pl.col("q_id").is_in(members))
        run_b = run_b.filter(pl.col("q_id").is_in(members))
    report = compare(_frame_to_ranx(qrels, Qrels, np.int64), [to_ranx_run(run_a, "a"), to_ranx_run(run_b, "b")],
                     [ranx_name], stat_test=stat_test, make_comparable=True)
    return float(report.comparisons[("a", "b")][ranx_name]["p_value"])


def per_query_p_value(per_query_a: pl.DataFrame, per_query_b: pl.DataFrame, metric: str,
                      units: Collection[str] | None = None) -> float:
    """Two-sided p-value that two runs differ on ``metric``, from their per-query values (``evaluate_run``'s
    table, a run folder's per_query.parquet): ranx's paired Student t-test over the queries, the test
    ``significance`` runs through ``ranx.compare`` on the ranked runs, without needing those runs (~1.5 MB a
    simshop run, not committed). ``units``: only these queries (a query group)."""
    from ranx.statistical_tests import paired_student_t_test

    values = [frame.filter(pl.col("metric") == metric).select("unit_id", "value") for frame in (per_query_a,
                                                                                                 per_query_b)]
    if units is not None:
        wanted = pl.Series(list(units), dtype=pl.Utf8).implode()
        values = [frame.filter(pl.col("unit_id").is_in(wanted)) for frame in values]
    if set(values[0]["unit_id"]) != set(values[1]["unit_id"]):
        raise ValueError(f"the two runs were scored on different queries for {metric} "
                         f"({values[0].height} vs {values[1].height}); compare runs of the same dataset and split")
    paired = values[0].join(values[1], on="unit_id", suffix="_b").sort("unit_id")
    p_value, _ = paired_student_t_test(paired["value"].to_numpy(), paired["value_b"].to_numpy())
    return float(p_value)


def relative_change(new: float, old: float) -> float:
    return (new - old) / old if old else float("nan")


# -- the re-ranking protocol (ESCI task 1) -------------------------------------------------------------------
# The ESCI task-1 protocol: re-rank each query's judged list; NDCG over the whole list (no cutoff).
RERANK_METRICS = {"ndcg": "rerank_ndcg", "ndcg@10": "rerank_ndcg@10"}


def judged_candidates(units: pl.DataFrame, judgments: pl.DataFrame, product_ids: list[str]) -> pl.DataFrame:
    """Every (test unit, judged product of its query) pair: unit_row (position in ``units``), item (catalogue
    index), unit_id, doc_id. Judged products outside the catalogue were already dropped by the loader."""
    catalogue = pl.DataFrame({"doc_id": product_ids, "item": np.arange(len(product_ids), dtype=np.int64)})
    return (
        units.with_row_index("unit_row").select("unit_row", "unit_id", "query_id")
        .join(judgments.select("query_id", pl.col("product_id").alias("doc_id")), on="query_id")
        .join(catalogue, on="doc_id")
        .select(pl.col("unit_row").cast(pl.Int64), "item", pl.col("unit_id").alias("q_id"), "doc_id")
    )


def rerank_run(units: pl.DataFrame, judgments: pl.DataFrame, product_ids: list[str], score_pairs) -> pl.DataFrame:
    """The model's scores of each unit's judged candidates, as a run (q_id, doc_id, score)."""
    pairs = judged_candidates(units, judgments, product_ids)
    scores = score_pairs(pairs["unit_row"].to_numpy(), pairs["item"].to_numpy())
    return pairs.select("q_id", "doc_id").with_columns(pl.Series("score", np.asarray(scores, dtype=np.float64)))


def rerank_metrics(targets, rerank: pl.DataFrame) -> dict[str, float]:
    """NDCG of the re-ranked judged lists (ESCI task 1), named ``rerank_*``; per query group too."""
    means, _ = evaluate_run(targets, rerank, list(RERANK_METRICS))
    renamed = {}
    for name, value in means.items():
        metric, bracket, group = name.partition("[")
        if metric in RERANK_METRICS:
            renamed[RERANK_METRICS[metric] + bracket + group] = value
    return renamed
