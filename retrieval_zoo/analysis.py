"""Looking into finished runs: per-query metrics, ranked lists, and paired comparisons of runs.

Everything reads a run folder (``RunResult.run_dir`` or a path): ``per_query.parquet`` (unit_id, metric,
value), ``units.parquet`` (unit_id, query_id, group), ``qrels.parquet`` (the judgments it was scored with),
``run.parquet`` (q_id, doc_id, score) and the dataset named in ``meta.json`` (for query texts, titles and
labels; pass ``dataset=`` when that spec cannot be loaded here)::

    result = rz.run_benchmark("bm25", "simshop-tiny")[0]
    result.per_query()                    # a row per unit: query, group, label counts, one column per metric
    result.ranked("q000001", k=10)        # rank, product_id, title, score, label of that unit's top 10
    rz.compare([run_a, run_b], metric="ndcg@10")   # means, deltas and ranx paired tests against run_a
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from retrieval_zoo.data.dataset import LABELS, ProductSearchDataset
from retrieval_zoo.evaluation import METRICS

RunLike = Any  # a run folder (str / Path) or a RunResult


def run_folder(run: RunLike) -> Path:
    folder = Path(getattr(run, "run_dir", run))
    if not (folder / "per_query.parquet").exists():
        raise FileNotFoundError(f"{folder} is not a finished run folder (no per_query.parquet)")
    return folder


def run_dataset(run: RunLike, dataset: str | ProductSearchDataset | None = None) -> ProductSearchDataset:
    """The dataset a run was made on: ``dataset`` when given (a spec or the dataset), else its ``dataset_spec``."""
    if isinstance(dataset, ProductSearchDataset):
        return dataset
    spec = dataset or json.loads((run_folder(run) / "meta.json").read_text()).get("dataset_spec")
    if not spec:
        raise ValueError(f"{run_folder(run)}/meta.json names no dataset_spec; pass dataset=")
    return _load(spec)


@lru_cache(maxsize=2)
def _load(spec: str) -> ProductSearchDataset:
    from retrieval_zoo.data.registry import load_dataset

    return load_dataset(spec)


def per_query(run: RunLike, dataset: str | ProductSearchDataset | None = None) -> pl.DataFrame:
    """One row per evaluated unit (search or query): unit_id, query_id, query, group, the query's judgment
    counts per label (``n_E``, ``n_S``, ``n_C``, ``n_I``; on behaviour data ``n_ordered``, the search's ordered
    items), then one column per metric (null where the unit has no target of the metric's kind, e.g. no Exact
    item for recall). Sorted by unit_id."""
    folder = run_folder(run)
    data = run_dataset(run, dataset)
    values = pl.read_parquet(folder / "per_query.parquet")
    metrics = list(dict.fromkeys(values["metric"].to_list()))
    wide = values.pivot(on="metric", index="unit_id", values="value") if values.height else pl.DataFrame(
        schema={"unit_id": pl.Utf8})
    units = pl.read_parquet(folder / "units.parquet")
    counts = (data.judgments.join(units.select("query_id").unique(), on="query_id")
              .group_by("query_id").agg([(pl.col("label") == label).sum().cast(pl.Int64).alias(f"n_{label}")
                                         for label in LABELS]))
    table = (units.join(data.queries.select("query_id", "query"), on="query_id", how="left")
             .join(counts, on="query_id", how="left")
             .with_columns(pl.col(f"n_{label}").fill_null(0) for label in LABELS))
    qrels = pl.read_parquet(folder / "qrels.parquet") if (folder / "qrels.parquet").exists() else None
    if qrels is not None and (qrels["kind"] == "personal").any():
        ordered = qrels.filter(pl.col("kind") == "personal").group_by("q_id").agg(pl.len().cast(pl.Int64)
                                                                                   .alias("n_ordered"))
        table = table.join(ordered.rename({"q_id": "unit_id"}), on="unit_id", how="left").with_columns(
            pl.col("n_ordered").fill_null(0))
    columns = ["unit_id", "query_id", "query", "group", *[f"n_{label}" for label in LABELS],
               *(["n_ordered"] if "n_ordered" in table.columns else [])]
    return table.select(columns).join(wide, on="unit_id", how="left").select(columns + metrics).sort("unit_id")


def ranked(run: RunLike, query_or_unit_id: str, k: int = 10,
           dataset: str | ProductSearchDataset | None = None) -> pl.DataFrame:
    """The run's ranked list for a unit id, a query id or a query text (every unit of that query: on behaviour
    data one per search), its top ``k``: unit_id, query, rank (from 1), product_id, title, score, label (the
    query's judgment of the item: E/S/C/I, null where unjudged) and, on behaviour data, ``ordered`` (whether the
    searcher ordered it: the personalised target). Ties rank by product id, as the metrics rank them."""
    folder = run_folder(run)
    data = run_dataset(run, dataset)
    units = pl.read_parquet(folder / "units.parquet").join(data.queries.select("query_id", "query"),
                                                           on="query_id", how="left")
    wanted = units.filter((pl.col("unit_id") == query_or_unit_id) | (pl.col("query_id") == query_or_unit_id))
    if not wanted.height:
        wanted = units.filter(pl.col("query") == query_or_unit_id)
    if not wanted.height:
        raise KeyError(f"{query_or_unit_id!r} is no evaluated unit id, query id or query text of {folder}")
    run_frame = pl.read_parquet(folder / "run.parquet").rename({"q_id": "unit_id", "doc_id": "product_id"})
    top = (run_frame.join(wanted.select("unit_id", "query_id", "query"), on="unit_id")
           .sort(["unit_id", "score", "product_id"], descending=[False, True, False])
           .with_columns((pl.int_range(pl.len()).over("unit_id") + 1).cast(pl.Int64).alias("rank"))
           .filter(pl.col("rank") <= k))
    labels = data.judgments.select("query_id", "product_id", "label")
    top = (top.join(data.products.select("product_id", "title"), on="product_id", how="left")
           .join(labels, on=["query_id", "product_id"], how="left"))
    columns = ["unit_id", "query", "rank", "product_id", "title", "score", "label"]
    if data.has_behaviour:
        orders = (data.interactions.filter(pl.col("action") == "order")
                  .select(pl.col("search_id").alias("unit_id"), "product_id").unique()
                  .with_columns(pl.lit(True).alias("ordered")))
        top = top.join(orders, on=["unit_id", "product_id"], how="left").with_columns(pl.col("ordered").fill_null(False))
        columns.append("ordered")
    # a unit's order as in the units table (the run's order), then rank
    order = wanted.select("unit_id").with_row_index("unit_order")
    return top.join(order, on="unit_id").sort("unit_order", "rank").select(columns)


def compare(runs: list[RunLike], metric: str = "ndcg@10", stat_test: str = "student",
            max_p: float = 0.05) -> pl.DataFrame:
    """The runs' ``metric`` with ranx paired tests against the first run (a baseline), over the evaluated
    units: run (model/variant/seed<k>), dataset, model, variant, seed, the metric's mean, ``delta`` (minus the
    first's), ``p_value`` (two-sided, ``stat_test``: student, fisher or tukey, as ``ranx.compare``) and
    ``significant`` (p < ``max_p``); the first run's test columns are null. The runs must share their test
    judgments (the same dataset and split), since the test pairs their units."""
    from ranx import compare as ranx_compare

    from retrieval_zoo.runs import load_run

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs: the first is the one the others are tested against")
    ranx_name, kind = METRICS[metric]
    folders = [run_folder(run) for run in runs]
    metas = [json.loads((f / "meta.json").read_text()) if (f / "meta.json").exists() else {} for f in folders]
    names = _labels(folders)
    loaded = [load_run(folder, kind, name) for folder, name in zip(folders, names, strict=True)]
    qrels = loaded[0][0]
    for folder, (other, _) in zip(folders[1:], loaded[1:], strict=True):
        if other.to_dict() != qrels.to_dict():
            raise ValueError(f"{folder} was scored with other {kind} judgments than {folders[0]} (another dataset "
                             "or split); a paired test needs the same units")
    report = ranx_compare(qrels, [run for _, run in loaded], [ranx_name], stat_test=stat_test, max_p=max_p,
                          make_comparable=True)
    first = names[0]
    rows = []
    for name, meta in zip(names, metas, strict=True):
        value = float(report.results[name][ranx_name])
        test = report.comparisons[(first, name)][ranx_name] if name != first else None
        rows.append({"run": name, "dataset": meta.get("dataset"), "model": meta.get("model"),
                     "variant": meta.get("variant"), "seed": meta.get("seed"), metric: value,
                     "delta": None if test is None else value - float(report.results[first][ranx_name]),
                     "p_value": None if test is None else float(test["p_value"]),
                     "significant": None if test is None else bool(test["p_value"] < max_p)})
    return pl.DataFrame(rows, schema={"run": pl.Utf8, "dataset": pl.Utf8, "model": pl.Utf8, "variant": pl.Utf8,
                                      "seed": pl.Int64, metric: pl.Float64, "delta": pl.Float64,
                                      "p_value": pl.Float64, "significant": pl.Boolean})


def _labels(folders: list[Path]) -> list[str]:
    """model/variant/seed<k> of each run folder; runs sharing one get their results folder's name added (and
    primes, should that not tell them apart)."""
    parts = [f.resolve().parts for f in folders]
    base = ["/".join(p[-3:]) for p in parts]
    labels: list[str] = []
    for name, p in zip(base, parts, strict=True):
        label = name if base.count(name) == 1 or len(p) < 6 else f"{name} ({p[-6]})"
        while label in labels:
            label += "'"
        labels.append(label)
    return labels
