"""Does model selection trade Recall@100 for NDCG@10? The saved runs' valid curves against their test results.

Issue 19 asks every ``pretrained`` variant to be at or above its untrained start (``minilm_zeroshot``) on the test
NDCG@10 and Recall@100. Selection watches valid NDCG@10 only; if the state it keeps had lost valid Recall@100
against the start, a selection rule guarding both metrics would be the fix. This script reads, for each run with
a ``valid_curve.csv`` under ``results/runs/<dataset>/``, the state selection kept per fold (the runner's rule:
the first epoch with the best valid monitor, the start unless a trained epoch beats it) with its valid metrics
next to the start's, and the test per-query differences against the reference row (default ``minilm_zeroshot``):
mean difference and how many queries got better or worse. No training: it reads what the runs saved.
Writes ``results/selection_check_<dataset>.md``.

    python benchmarks/selection_check.py                       # icecat, the pretrained variants
    python benchmarks/selection_check.py --dataset icecat --variant default --reference bm25/default
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from retrieval_zoo import atomic_files
from retrieval_zoo.reports import markdown_table

REPO = Path(__file__).resolve().parents[1]
METRICS = ("ndcg@10", "recall@100")


def selected_states(curve: pl.DataFrame, monitor: str = "ndcg@10") -> pl.DataFrame:
    """Per fold: the start's and the kept state's valid metrics, as ``validation.select_best`` keeps it."""
    rows = []
    fold_column = "fold" if "fold" in curve.columns else None
    folds = curve[fold_column].unique().sort().to_list() if fold_column else [0]
    for fold in folds:
        points = curve.filter(pl.col(fold_column) == fold) if fold_column else curve
        start = points.filter(pl.col("epoch") == 0).row(0, named=True)
        candidate = trained_candidate(points, monitor)
        kept = candidate if candidate is not None and candidate[monitor] > start[monitor] else start
        rows.append({"fold": fold, "kept_epoch": kept["epoch"], "epochs": points["epoch"].max(),
                     **({"averaged": kept["averaged"]} if "averaged" in points.columns else {}),
                     **{f"start {m}": start[m] for m in METRICS}, **{f"kept {m}": kept[m] for m in METRICS}})
    return pl.DataFrame(rows)


def trained_candidate(points: pl.DataFrame, monitor: str) -> dict | None:
    """The trained state selection weighs against the start: the average of the best checks where the run made
    one (``validation.average_top_k``: a row with ``averaged`` >= 2), else the best check (the first maximum)."""
    if "averaged" in points.columns:
        average = points.filter(pl.col("averaged") >= 2)
        if average.height:
            return average.row(0, named=True)
    checks = points.filter(pl.col("epoch") > 0).sort("epoch")
    return checks.row(int(checks[monitor].arg_max()), named=True) if checks.height else None


def per_query(run_dir: Path, metric: str) -> pl.DataFrame:
    return (pl.read_parquet(run_dir / "per_query.parquet").filter(pl.col("metric") == metric)
            .select("unit_id", "value"))


def test_differences(run_dir: Path, reference_dir: Path) -> dict[str, str]:
    """Per metric: the mean per-query test difference against the reference and queries better / worse."""
    cells = {}
    for metric in METRICS:
        pairs = per_query(run_dir, metric).join(per_query(reference_dir, metric), on="unit_id", suffix="_ref")
        difference = pairs["value"] - pairs["value_ref"]
        cells[f"test {metric} vs reference"] = (
            f"{difference.mean():+.4f} ({(difference > 1e-9).sum()} better / {(difference < -1e-9).sum()} worse "
            f"of {pairs.height})")
    return cells


def seed_dirs(results: Path, dataset: str, model: str, variant: str) -> list[Path]:
    return sorted((results / "runs" / dataset / model / variant).glob("seed*"))


def report(results: Path, dataset: str, variant: str, reference: str) -> str:
    ref_model, _, ref_variant = reference.partition("/")
    reference_dirs = {d.name: d for d in seed_dirs(results, dataset, ref_model, ref_variant or "default")}
    if not reference_dirs:
        raise SystemExit(f"error: no runs of the reference {reference} under {results / 'runs' / dataset}")
    lines = [f"# Selection vs the start: {dataset}, `{variant}` variants, reference `{reference}`", "",
             "Per fold: the epoch selection kept (0: the start), its valid metrics next to the start's. Per run: the",
             "test per-query difference against the reference (mean, and queries better / worse). Written by",
             f"`python benchmarks/selection_check.py --dataset {dataset} --variant {variant}`.", ""]
    summary = []
    for curve_path in sorted((results / "runs" / dataset).glob(f"*/{variant}/seed*/valid_curve.csv")):
        run_dir = curve_path.parent
        model = run_dir.parent.parent.name
        states = selected_states(pl.read_csv(curve_path))
        lost = states.filter(pl.col("kept recall@100") < pl.col("start recall@100") - 1e-12).height
        reference_dir = reference_dirs.get(run_dir.name) or next(iter(reference_dirs.values()))
        summary.append({"run": f"{model}/{variant}/{run_dir.name}", "folds": states.height,
                        "folds whose kept state lost valid recall@100": lost,
                        **test_differences(run_dir, reference_dir)})
        lines += [f"## {model}/{variant}/{run_dir.name}", "", markdown(states), ""]
    if not summary:
        raise SystemExit(f"error: no {variant} run with a valid_curve.csv under {results / 'runs' / dataset}")
    return "\n".join(["", *lines[:6], "## Summary", "", markdown(pl.DataFrame(summary)), "", *lines[6:]])[1:]


def markdown(frame: pl.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return "\n".join(markdown_table(frame.columns, ([cell(v) for v in row] for row in frame.iter_rows())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="icecat")
    parser.add_argument("--variant", default="pretrained")
    parser.add_argument("--reference", default="minilm_zeroshot/default", help="model/variant compared against")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args()
    text = report(args.results, args.dataset, args.variant, args.reference)
    out = args.results / f"selection_check_{args.dataset}.md"
    atomic_files.write_text(out, text + "\n")
    print(text)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
