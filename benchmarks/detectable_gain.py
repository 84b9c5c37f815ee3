"""How large a gain can these test queries separate? Each run against a reference, from the saved per-query scores.

Per run of ``--variant`` on ``--dataset``: the mean per-query difference of ``--metric`` against the reference run
of the same seed, the spread (sd) of those differences, the board's test (ranx's paired t-test over the queries,
``evaluation.per_query_p_value``) and the smallest mean gain that test would call separable at ``--alpha`` given
that spread: t(1 - alpha/2, n - 1) * sd / sqrt(n). A run whose mean gain is below it is not ▲ however real the
gain, so a model whose gain varies more between queries needs a larger mean gain to be ▲. Beside it, how many
queries gained and lost, the query with the largest difference and the mean gain without it (whether one query
carries the sign). Reads the committed ``per_query.parquet`` files (a fresh clone has them); no training. Writes
``results/detectable_gain_<dataset>.md`` (NDCG@10) or ``results/detectable_gain_<dataset>_<metric>.md``.

    python benchmarks/detectable_gain.py     # icecat, pretrained variants vs minilm_zeroshot/default, ndcg@10
    python benchmarks/detectable_gain.py --variant default --reference bm25/default --metric recall@100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from retrieval_zoo import atomic_files
from retrieval_zoo.evaluation import per_query_p_value
from retrieval_zoo.reports import markdown_table

REPO = Path(__file__).resolve().parents[1]


def detectable_gain(differences: np.ndarray, alpha: float) -> float:
    """The mean paired difference at which a two-sided paired t-test with these differences' spread has p = alpha."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 queries, got {n}")
    return float(stats.t.ppf(1 - alpha / 2, n - 1) * np.std(differences, ddof=1) / np.sqrt(n))


def paired_differences(run: pl.DataFrame, reference: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Per query (unit_id, in unit order), the run's ``metric`` minus the reference's (``difference``), on the
    queries both were scored on."""
    def values(per_query: pl.DataFrame) -> pl.DataFrame:
        return per_query.filter(pl.col("metric") == metric).select("unit_id", "value")

    pairs = values(run).join(values(reference), on="unit_id", suffix="_ref").sort("unit_id")
    return pairs.select("unit_id", difference=pl.col("value") - pl.col("value_ref"))


def run_row(run_dir: Path, reference_dir: Path, metric: str, alpha: float) -> dict:
    run, reference = (pl.read_parquet(folder / "per_query.parquet") for folder in (run_dir, reference_dir))
    pairs = paired_differences(run, reference, metric)
    differences = pairs["difference"].to_numpy()
    p_value = per_query_p_value(run, reference, metric)
    # how much of the mean one query carries: on ~100 queries a single one can flip its sign
    largest = pairs.row(int(np.argmax(np.abs(differences))), named=True)
    return {"run": "/".join(run_dir.parts[-3:]), "queries": len(differences), "mean gain": float(differences.mean()),
            "sd of the per-query differences": float(np.std(differences, ddof=1)), "p": p_value,
            f"gain needed for p < {alpha:g}": detectable_gain(differences, alpha),
            "separable": "yes" if p_value < alpha else "no",
            "better / worse": f"{int((differences > 0).sum())} / {int((differences < 0).sum())}",
            "largest single query": f"{largest['unit_id']} ({largest['difference']:+.4f})",
            "mean gain without it": float((differences.sum() - largest["difference"]) / (len(differences) - 1))}


def report(results: Path, dataset: str, variant: str, reference: str, metric: str, alpha: float) -> pl.DataFrame:
    ref_model, _, ref_variant = reference.partition("/")
    reference_root = results / "runs" / dataset / ref_model / (ref_variant or "default")
    rows = []
    for run_dir in sorted((results / "runs" / dataset).glob(f"*/{variant}/seed*")):
        reference_dir = reference_root / run_dir.name
        if run_dir.parent.parent.name == ref_model or not (run_dir / "per_query.parquet").exists():
            continue
        if not (reference_dir / "per_query.parquet").exists():
            raise SystemExit(f"error: no saved scores of {reference} {run_dir.name} under {reference_root}")
        rows.append(run_row(run_dir, reference_dir, metric, alpha))
    if not rows:
        raise SystemExit(f"error: no {variant} run with saved scores under {results / 'runs' / dataset}")
    return pl.DataFrame(rows).sort("mean gain", descending=True)


def report_name(dataset: str, metric: str) -> str:
    """``detectable_gain_<dataset>.md`` for NDCG@10 (the board's headline), else ``..._<metric>.md``, so reports
    of two metrics sit side by side."""
    return f"detectable_gain_{dataset}.md" if metric == "ndcg@10" else f"detectable_gain_{dataset}_{metric}.md"


def markdown(frame: pl.DataFrame, header: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.2g}" if abs(value) < 0.001 and value != 0 else f"{value:.4f}"
        return str(value)

    rows = markdown_table(frame.columns, ([cell(v) for v in row] for row in frame.iter_rows()))
    return "\n".join([*header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="icecat")
    parser.add_argument("--variant", default="pretrained")
    parser.add_argument("--reference", default="minilm_zeroshot/default", help="model/variant compared against")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--alpha", type=float, default=0.01, help="the board's ▲/▼ level")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args()
    frame = report(args.results, args.dataset, args.variant, args.reference, args.metric, args.alpha)
    results = args.results.resolve()
    shown = results.relative_to(REPO) if results.is_relative_to(REPO) else results
    elsewhere = "" if results == REPO / "results" else f" --results {shown}"  # the command reruns as written
    header = [f"# Detectable gains: {args.dataset}, `{args.variant}` variants vs `{args.reference}`, {args.metric}",
              "", "Per run: the mean per-query difference against the reference, its sd, ranx's paired t-test p and",
              f"the smallest mean gain that test separates at p < {args.alpha:g} with that sd; how many queries",
              "gained and lost, the query whose difference is largest and the mean gain without it. Written by",
              f"`python benchmarks/detectable_gain.py --dataset {args.dataset} --variant {args.variant} "
              f"--reference {args.reference} --metric {args.metric}{elsewhere}`.", ""]
    text = markdown(frame, header)
    out = args.results / report_name(args.dataset, args.metric)
    atomic_files.write_text(out, text + "\n")
    print(text)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
