"""Which judged Exact items a run moves across the Recall@K cutoff against a reference run: the items behind a mean.

The board's Recall@K is a mean over queries, so an item weighs 1 / (the query's Exact items): one item of a query
with 3 Exact items moves the mean as much as 13 items of a query with 40. A trained run can find more judged items
in its top K than its start and still have the lower mean. This script compares two run folders of the same
dataset and split, item by item: the Exact items each finds in its top K, the items the run loses (in the
reference's top K, not in its own) and gains, their ranks in both, and the weight of each in the mean.

It reads each folder's ranked run (``run.parquet``: local, not committed; rerun the row with ``python -m
retrieval_zoo bench`` to make it) and the judgments the runs were scored with (``qrels.parquet``). With
``--query`` and ``--fold`` (a cross-validated run's fold that tests the query) it also lists the training queries
of that fold whose mined hard negatives (the run's own data config) or judgments hold the query's Exact items:
whether training was told to push them down. Writes ``results/recall_churn_<dataset>_<run>.md``.

    python benchmarks/recall_churn.py --run results/runs/icecat/mgdspr/pretrained/seed0 \
        --reference results/runs/icecat/minilm_zeroshot/default/seed0 [--k 100] [--query q050 --fold 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from retrieval_zoo import atomic_files
from retrieval_zoo.reports import markdown_table

REPO = Path(__file__).resolve().parents[1]


def ranked(run: pl.DataFrame) -> pl.DataFrame:
    """``q_id, doc_id, rank`` (1 = the top) of a ranked run ``q_id, doc_id, score``."""
    return run.with_columns(pl.col("score").rank("ordinal", descending=True).over("q_id").alias("rank"))


def item_ranks(exact: pl.DataFrame, reference: pl.DataFrame, run: pl.DataFrame) -> pl.DataFrame:
    """Per judged Exact item: its rank in the reference and in the run (null: not retrieved) and its query's
    number of Exact items."""
    ranks = [ranked(frame).select("q_id", "doc_id", pl.col("rank").alias(name))
             for name, frame in (("reference", reference), ("run", run))]
    counts = exact.group_by("q_id").agg(pl.len().alias("query_exact_items"))
    return (exact.select("q_id", "doc_id").join(ranks[0], on=["q_id", "doc_id"], how="left")
            .join(ranks[1], on=["q_id", "doc_id"], how="left").join(counts, on="q_id"))


def churn(items: pl.DataFrame, k: int) -> dict[str, float | int]:
    """Items found in the top ``k`` by each run, lost and gained, and both Recall@k means (over queries and over
    items)."""
    found = {name: pl.col(name).is_not_null() & (pl.col(name) <= k) for name in ("reference", "run")}
    flags = items.with_columns(**{f"{name}_found": flag for name, flag in found.items()})
    per_query = flags.group_by("q_id").agg(pl.col("reference_found").mean(), pl.col("run_found").mean())
    lost = flags.filter(pl.col("reference_found") & ~pl.col("run_found"))
    gained = flags.filter(~pl.col("reference_found") & pl.col("run_found"))
    return {
        "exact_items": items.height, "queries": per_query.height,
        "reference_items_found": int(flags["reference_found"].sum()), "run_items_found": int(flags["run_found"].sum()),
        "items_lost": lost.height, "items_gained": gained.height,
        "queries_losing": lost["q_id"].n_unique(), "queries_gaining": gained["q_id"].n_unique(),
        "reference_recall_mean_over_queries": float(per_query["reference_found"].mean()),
        "run_recall_mean_over_queries": float(per_query["run_found"].mean()),
        "reference_recall_over_items": float(flags["reference_found"].mean()),
        "run_recall_over_items": float(flags["run_found"].mean()),
        "weight_lost": float((1 / lost["query_exact_items"]).sum() / per_query.height),
        "weight_gained": float((1 / gained["query_exact_items"]).sum() / per_query.height),
    }


def moved(items: pl.DataFrame, k: int) -> pl.DataFrame:
    """The items that crossed the cutoff, with their ranks and their weight in the mean over queries."""
    crossed = items.filter((pl.col("reference").fill_null(10**9) <= k) != (pl.col("run").fill_null(10**9) <= k))
    return (crossed.with_columns(pl.when(pl.col("run").fill_null(10**9) <= k).then(pl.lit("gained"))
                                 .otherwise(pl.lit("lost")).alias("change"),
                                 (1 / pl.col("query_exact_items")).alias("weight_in_its_query"))
            .sort("change", "q_id", "reference"))


def training_pressure(run_dir: Path, doc_ids: list[str], fold: int) -> pl.DataFrame:
    """The fold's training queries whose mined hard negatives (as the run's config mines them) or judgments hold
    any of ``doc_ids``: ``query, doc_id, as`` ("mined negative" or "judged <label>")."""
    import yaml

    from retrieval_zoo.data.registry import load_dataset
    from retrieval_zoo.models import build_model
    from retrieval_zoo.runner import data_module_for, fold_view

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    dataset = load_dataset(json.loads((run_dir / "meta.json").read_text())["dataset_spec"])
    datamodule = data_module_for(config, fold_view(dataset, fold), build_model(config), seed=0)
    datamodule.setup()
    return pressure(datamodule, dataset, doc_ids)


def pressure(datamodule, dataset, doc_ids: list[str]) -> pl.DataFrame:
    """``training_pressure`` on a set-up data module: its train units' mined lists and the dataset's judgments."""
    units, rows = datamodule.units, {datamodule.catalog.product_ids.index(d): d for d in doc_ids}
    found = []
    mined = datamodule.hard_negatives
    train = units.indices_of_split("train")
    for unit in train if mined is not None else []:
        for item in set(mined.of(unit).tolist()) & set(rows):
            found.append({"query": units.texts[unit], "doc_id": rows[item], "as": "mined negative"})
    train_queries = dataset.queries.filter(pl.col("query_id").is_in([units.query_ids[u] for u in train]))
    judged = dataset.judgments.filter(pl.col("product_id").is_in(doc_ids)).join(train_queries, on="query_id")
    found += [{"query": r["query"], "doc_id": r["product_id"], "as": f"judged {r['label']}"}
              for r in judged.iter_rows(named=True)]
    return pl.DataFrame(found, schema={"query": pl.Utf8, "doc_id": pl.Utf8, "as": pl.Utf8}).unique().sort("query")


def markdown(frame: pl.DataFrame) -> str:
    def cell(value) -> str:
        return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    return "\n".join(markdown_table(frame.columns, ([cell(v) for v in row] for row in frame.iter_rows())))


def report(run_dir: Path, reference_dir: Path, k: int, query: str | None, fold: int | None) -> tuple[str, dict]:
    qrels = pl.read_parquet(run_dir / "qrels.parquet")
    exact = qrels.filter(pl.col("kind") == "exact").select("q_id", "doc_id")
    items = item_ranks(exact, pl.read_parquet(reference_dir / "run.parquet"), pl.read_parquet(run_dir / "run.parquet"))
    summary = churn(items, k)
    lines = [f"# Recall@{k}, item by item: {run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir} "
             f"against {reference_dir.relative_to(REPO) if reference_dir.is_relative_to(REPO) else reference_dir}",
             "", "Written by `python benchmarks/recall_churn.py` (see its docstring).", "",
             markdown(pl.DataFrame({"figure": list(summary),
                                    "value": [f"{v:.4f}" if isinstance(v, float) else str(v) for v in summary.values()]})),
             "",
             f"## Judged Exact items that crossed the top-{k} cutoff", "", markdown(moved(items, k))]
    if query:
        lines += ["", f"## Query {query}: its Exact items", "",
                  markdown(items.filter(pl.col("q_id") == query).sort("reference"))]
        if fold is not None:
            pressure = training_pressure(run_dir, items.filter(pl.col("q_id") == query)["doc_id"].to_list(), fold)
            lines += ["", f"Fold {fold}'s training queries whose mined negatives or judgments hold them: "
                      f"{pressure.height}", ""] + ([markdown(pressure)] if pressure.height else [])
    return "\n".join(lines) + "\n", summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--query", help="a query id whose Exact items are listed")
    parser.add_argument("--fold", type=int, help="with --query: the fold testing it, whose training queries' "
                        "mined negatives and judgments are searched for its Exact items")
    args = parser.parse_args()
    for folder in (args.run, args.reference):
        if not (folder / "run.parquet").exists():
            raise SystemExit(f"{folder} has no run.parquet; rerun the row with `python -m retrieval_zoo bench` "
                             f"(ranked runs are not committed)")
    if args.fold is not None and not args.query:
        raise SystemExit("--fold needs --query (the query whose Exact items are looked up)")
    text, summary = report(args.run.resolve(), args.reference.resolve(), args.k, args.query, args.fold)
    meta = json.loads((args.run / "meta.json").read_text()) if (args.run / "meta.json").exists() else {}
    name = "_".join(args.run.resolve().parts[-3:])
    out = REPO / "results" / f"recall_churn_{meta.get('dataset', 'run')}_{name}.md"
    atomic_files.write_text(out, text)
    print(json.dumps(summary, indent=1))
    print(f"written {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
