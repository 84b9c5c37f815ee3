"""The best NDCG@10 a text-only model can expect on simshop's test searches, next to a saved run's.

simshop writes a product's colour and style in its listing only when the product is not ``image_only``; its
relevance labels are computed from the true attributes (``retrieval_zoo/data/simshop/judgments.py``, ``label_matrix``).
A model that reads text alone therefore knows every label except one: for a query that names a colour or style
(group ``image_attr``), an image-only product of the right type whose text attributes match is Exact or
Substitute depending on pixels it cannot see. The Bayes-optimal text ranking puts the text-visible Exact items
first, then that pool in an order no text can improve (any order is as good as another, so the expected gain
at each of its positions is the pool's mean gain), then the rest by their (text-known) label. Its expected
DCG@10 over the ideal DCG@10 is the text-only ceiling of the query; broad and text_attr queries name only
text-visible attributes, so their ceiling is 1.

The ceiling is generous (it assumes a model that understands text perfectly, typos and keyword stuffing
included), so the distance from a run to it bounds what any text-only model could still gain. A second table
says what fills each run's top 10 on ``image_attr`` queries, in the terms of that optimal ranking (exact items
whose text names the attribute; image-only items whose text matches; same-type items whose text names another
colour or style, which the optimum ranks below both; other misses).

    python benchmarks/text_ceiling.py results/runs/simshop/light_two_tower/pretrained/seed0 \
        results/runs/simshop/bm25/default/seed0 --labels ltt_pretrained,bm25
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.evaluation import GAINS

CUTOFF = 10
TEXT_ATTRIBUTES = ("brand", "material")  # the intent attributes every listing writes in text


def intent_fields(intent: str) -> dict[str, str]:
    """``type=dress;color=red`` -> {"type": "dress", "color": "red"} (broad intents: {"category": ...})."""
    return dict(part.split("=", 1) for part in intent.split(";"))


def best_dcg(gains: np.ndarray) -> float:
    """DCG@10 of ``gains`` ranked best first (linear gains, log2 discount, as evaluation.py's NDCG)."""
    best = np.sort(gains)[::-1][:CUTOFF]
    return float((best / np.log2(np.arange(2, len(best) + 2))).sum())


def expected_dcg(gains: np.ndarray, pool: np.ndarray) -> float:
    """Expected DCG@10 of the best text ranking: known gains sorted, the pool as one block at its mean gain."""
    block = np.full(int(pool.sum()), gains[pool].mean()) if pool.any() else np.empty(0)
    return best_dcg(np.concatenate([gains[~pool], block]))


def query_ceiling(fields: dict[str, str], products: pl.DataFrame, gains: np.ndarray) -> float:
    """The text-only NDCG@10 ceiling of one query (``gains`` aligned with ``products``)."""
    ideal = best_dcg(gains)
    if ideal == 0:
        return float("nan")
    if "color" not in fields and "style" not in fields:
        return 1.0
    pool = products["image_only"].to_numpy() & (products["product_type"] == fields["type"]).to_numpy()
    for name in TEXT_ATTRIBUTES:
        if name in fields:
            pool &= (products[name] == fields[name]).to_numpy()
    return expected_dcg(gains, pool) / ideal


def ceilings(dataset, unit_queries: pl.DataFrame) -> pl.DataFrame:
    """(query_id, group, ceiling) for the queries of the evaluated units."""
    products = dataset.products.with_row_index("row")
    queries = dataset.queries.join(unit_queries.select("query_id").unique(), on="query_id")
    judged = (dataset.judgments.join(queries.select("query_id"), on="query_id")
              .join(products.select("product_id", "row"), on="product_id")
              .with_columns(pl.col("label").replace_strict(GAINS, return_dtype=pl.Float64).alias("gain")))
    by_query = {key[0]: frame for key, frame in judged.group_by("query_id")}
    rows = []
    for query_id, group, intent in queries.select("query_id", "group", "intent").iter_rows():
        gains = np.zeros(products.height)  # fully judged: a missing pair is Irrelevant
        frame = by_query.get(query_id)
        if frame is not None:
            gains[frame["row"].to_numpy()] = frame["gain"].to_numpy() / GAINS["E"]
        rows.append((query_id, group, query_ceiling(intent_fields(intent), products, gains)))
    return pl.DataFrame(rows, schema=["query_id", "group", "ceiling"], orient="row")


def top_composition(run: pl.DataFrame, units: pl.DataFrame, dataset) -> pl.DataFrame:
    """Share of each kind of item in the top 10 of the run's ``image_attr`` searches (see the docstring)."""
    top = (run.sort(["q_id", "score"], descending=[False, True]).group_by("q_id", maintain_order=True).head(CUTOFF)
           .rename({"q_id": "unit_id", "doc_id": "product_id"})
           .join(units.filter(pl.col("group") == "image_attr"), on="unit_id")
           .join(dataset.products.select("product_id", "image_only", "product_type", *TEXT_ATTRIBUTES),
                 on="product_id")
           .join(dataset.queries.select("query_id", "intent"), on="query_id")
           .join(dataset.judgments, on=["query_id", "product_id"], how="left")
           .with_columns(pl.col("label").fill_null("I")))
    named = {name: pl.col("intent").str.extract(f"{name}=([^;]+)") for name in ("type", *TEXT_ATTRIBUTES)}
    same_type = pl.col("product_type") == named["type"]
    text_matches = pl.all_horizontal(named[name].is_null() | (pl.col(name) == named[name])
                                     for name in TEXT_ATTRIBUTES)
    kind = (pl.when((pl.col("label") == "E") & ~pl.col("image_only")).then(pl.lit("exact, attribute in text"))
            .when(pl.col("image_only") & same_type & text_matches).then(pl.lit("image-only, text matches"))
            .when(same_type & text_matches).then(pl.lit("same type, text names another colour/style"))
            .when(same_type).then(pl.lit("same type, other brand/material"))
            .otherwise(pl.lit("other type")))
    return top.group_by(kind.alias("top-10 item")).agg((pl.len() / top.height).alias("share"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="saved simshop run folders (run.parquet, units.parquet)")
    parser.add_argument("--labels", help="comma-separated column names for the runs (default: model/variant/seed)")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else ["/".join(d.parts[-3:]) for d in args.run_dirs]
    if len(labels) != len(args.run_dirs) or len(set(labels)) != len(labels):
        raise SystemExit(f"error: --labels needs {len(args.run_dirs)} distinct names, one per run folder")
    dataset = load_dataset("simshop")
    units = pl.read_parquet(args.run_dirs[0] / "units.parquet")
    per_unit = units.join(ceilings(dataset, units).drop("group"), on="query_id")
    summary = (per_unit.group_by("group").agg(pl.col("ceiling").mean().alias("text-only ceiling")).sort("group")
               .vstack(pl.DataFrame({"group": ["all"], "text-only ceiling": [per_unit["ceiling"].mean()]})))
    composition = None
    for run_dir, name in zip(args.run_dirs, labels, strict=True):
        scores = (pl.read_parquet(run_dir / "per_query.parquet").filter(pl.col("metric") == f"ndcg@{CUTOFF}")
                  .join(units, on="unit_id"))
        by_group = scores.group_by("group").agg(pl.col("value").mean().alias(name))
        overall = pl.DataFrame({"group": ["all"], name: [scores["value"].mean()]})
        summary = summary.join(by_group.vstack(overall), on="group", how="left")
        shares = top_composition(pl.read_parquet(run_dir / "run.parquet"), units, dataset).rename({"share": name})
        composition = shares if composition is None else composition.join(shares, on="top-10 item", how="full",
                                                                          coalesce=True)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, float_precision=4, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(f"ndcg@{CUTOFF} per query group, {per_unit.height} test searches")
        print(summary)
        print(f"what fills the top {CUTOFF} of image_attr searches (share of slots)")
        print(composition.fill_null(0.0).sort("top-10 item"))


if __name__ == "__main__":
    main()
