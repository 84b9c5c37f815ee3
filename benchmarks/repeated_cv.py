"""Repeated cross-validation on Icecat: models over several fold assignments, so that a difference between two
models is not one split's accident.

The board scores Icecat by one 5-fold query-level cross-validation (folds dealt by the hash of the query text,
training seed 0). With 135 queries, which query lands in which fold moves a model's mean by about as much as
some differences the board reports (Recall@100 of light_two_tower/pretrained against minilm_zeroshot: -0.006,
p 0.43). Repeated cross-validation (Bouckaert & Frank, "Evaluating the replicability of significance tests for
comparing learning algorithms", PAKDD 2004) reruns each model with other fold seeds (``icecat:fold_seed=N``:
folds by the hash of "N:<query text>") and averages each query's value over the repetitions. Every query is a
test query once per repetition, so the paired t-test over queries (ranx) still pairs query by query.

This script

1. runs the missing (fold seed, training seed, model/variant) runs into ``--results`` through the leaderboard
   machinery (resumable, keyed by config hash); fold seed 0 is the board's own runs, read from ``--board``
   where they are current, else run here like the others; ``--train-seeds`` (default 0) crosses every fold
   assignment with those training seeds;
2. writes ``<report>.md`` and ``<report>.csv`` (``--report``, default ``icecat``) to ``--results``: per model and
   metric, the mean of each fold seed (over its training seeds), the mean over all runs, the change against
   ``--reference`` and the paired t-test p-value (ranx) on the per-query values averaged over all runs.

The report reads only the score files committed with the runs (``significance.SCORE_FILES``), so
``--report-only`` rebuilds it from a fresh clone.

    python benchmarks/repeated_cv.py --models minilm_zeroshot,light_two_tower/pretrained --fold-seeds 0,1,2
    python benchmarks/repeated_cv.py --models minilm_zeroshot,light_two_tower/pretrained --report-only
    python benchmarks/repeated_cv.py --models minilm_zeroshot,mgdspr/pretrained --train-seeds 0,1,2 \
        --report icecat_train_seeds
"""

from __future__ import annotations

import argparse
import statistics
from functools import lru_cache
from pathlib import Path

import polars as pl

from retrieval_zoo import atomic_files
from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.evaluation import per_query_p_value, relative_change
from retrieval_zoo.models.registry import load_config, model_variants
from retrieval_zoo.plan import finished_runs, run_dataset_plan
from retrieval_zoo.reports import markdown_table
from retrieval_zoo.runner import config_hash, dataset_identity

REPO = Path(__file__).resolve().parents[1]
METRICS = ["ndcg@10", "recall@100"]


def fold_spec(fold_seed: int) -> str:
    return "icecat" if fold_seed == 0 else f"icecat:fold_seed={fold_seed}"


def current_folder(results_dir: Path, spec: str, model: str, variant: str, seed: int = 0) -> Path | None:
    """The run folder of ``results_dir``'s board row for (model, variant, training ``seed``) on ``spec``, made
    with today's config and recipe on today's data (None: missing or stale)."""
    identity = identity_of(spec)
    wanted = config_hash(load_config(model, variant), identity.fingerprint, identity.label_data)
    made = finished_runs(results_dir, identity.key, identity.fingerprint, identity.label_data)
    if made.get((model, variant, seed)) != wanted:
        return None
    folder = results_dir / "runs" / identity.key / model / variant / f"seed{seed}"
    return folder if (folder / "per_query.parquet").exists() else None


@lru_cache(maxsize=16)
def identity_of(spec: str):
    """The board's name and content hash of a fold seed's dataset (loaded once: every lookup asks again)."""
    return dataset_identity(spec, load_dataset(spec))


def find_folder(fold_seed: int, model: str, variant: str, results_dir: Path, board: Path,
                seed: int = 0) -> Path | None:
    spec = fold_spec(fold_seed)
    found = current_folder(board, spec, model, variant, seed) if fold_seed == 0 else None
    return found or current_folder(results_dir, spec, model, variant, seed)


def run_missing(pairs: list[tuple[str, str]], fold_seeds: list[int], results_dir: Path, board: Path,
                train_seeds: list[int]) -> None:
    for fold_seed in fold_seeds:
        for model, variant in pairs:
            todo = [s for s in train_seeds if find_folder(fold_seed, model, variant, results_dir, board, s) is None]
            if not todo:
                print(f"have: fold seed {fold_seed}, {model}/{variant}", flush=True)
                continue
            print(f"running: fold seed {fold_seed}, {model}/{variant}, training seeds {todo}", flush=True)
            run_dataset_plan(fold_spec(fold_seed), [{"model": model, "variant": variant, "seeds": todo}], 1,
                             results_dir, wandb="disabled", resume=True)


def per_query(folder: Path, metric: str) -> pl.DataFrame:
    frame = pl.read_parquet(folder / "per_query.parquet")
    return frame.filter(pl.col("metric") == metric).select("unit_id", "value")


def averaged_over_fold_seeds(folders: list[Path], metric: str) -> pl.DataFrame:
    """Each query's value averaged over the repetitions (every fold seed's runs, each training seed one), in
    ``per_query_p_value``'s (unit_id, metric, value)."""
    values = pl.concat([per_query(folder, metric) for folder in folders])
    counts = values.group_by("unit_id").len()["len"].unique().to_list()
    if counts != [len(folders)]:
        raise SystemExit(f"error: the runs of one model do not score the same queries for {metric} "
                         f"(per query {sorted(counts)} of {len(folders)} repetitions); rerun the stale ones")
    return (values.group_by("unit_id").agg(pl.col("value").mean()).sort("unit_id")
            .with_columns(pl.lit(metric).alias("metric")).select("unit_id", "metric", "value"))


def report_rows(folders: dict[tuple[str, str], dict[int, list[Path]]], fold_seeds: list[int],
                reference: tuple[str, str], metrics: list[str]) -> list[dict]:
    """``folders``: per model/variant, per fold seed, its runs (one per training seed)."""
    rows = []
    for metric in metrics:
        reference_values = averaged_over_fold_seeds(all_runs(folders[reference], fold_seeds), metric)
        for pair, by_seed in folders.items():
            values = averaged_over_fold_seeds(all_runs(by_seed, fold_seeds), metric)
            mean, reference_mean = values["value"].mean(), reference_values["value"].mean()
            row = {"model": f"{pair[0]}/{pair[1]}", "metric": metric}
            row |= {f"fold seed {s}": statistics.fmean(per_query(run, metric)["value"].mean() for run in by_seed[s])
                    for s in fold_seeds}
            row |= {"mean": mean, "change vs reference": relative_change(mean, reference_mean),
                    "p": None if pair == reference else per_query_p_value(values, reference_values, metric)}
            rows.append(row)
    return rows


def all_runs(by_seed: dict[int, list[Path]], fold_seeds: list[int]) -> list[Path]:
    return [run for s in fold_seeds for run in by_seed[s]]


def markdown(rows: list[dict], fold_seeds: list[int], reference: tuple[str, str], train_seeds: list[int] = (0,)
             ) -> str:
    headers = list(rows[0])
    lines = markdown_table(headers, ([_cell(key, row[key]) for key in headers] for row in rows))
    return "\n".join([
        "# Icecat: repeated 5-fold cross-validation",
        f"Fold seeds {', '.join(map(str, fold_seeds))} (0: the board's folds), training "
        f"seed{'s' if len(train_seeds) > 1 else ''} {', '.join(map(str, train_seeds))} under each (a fold seed's "
        f"column: the mean of its training seeds); `mean` is the mean over queries of each query's value averaged "
        f"over every run; `p`: ranx's paired Student t-test over the 135 queries on those averages, against "
        f"{reference[0]}/{reference[1]}. Made by "
        f"`python benchmarks/repeated_cv.py` (the command and runs: see the script's docstring).",
        "",
        *lines,
    ]) + "\n"


def _cell(key: str, value) -> str:
    if value is None:
        return "–"
    if key == "change vs reference":
        return f"{value:+.1%}"
    if key == "p":
        return f"{value:.2g}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def collect(pairs: list[tuple[str, str]], fold_seeds: list[int], results_dir: Path, board: Path,
            train_seeds: list[int]) -> dict[tuple[str, str], dict[int, list[Path]]]:
    folders, missing = {}, []
    for pair in pairs:
        folders[pair] = {}
        for fold_seed in fold_seeds:
            folders[pair][fold_seed] = []
            for seed in train_seeds:
                found = find_folder(fold_seed, *pair, results_dir, board, seed)
                if found is None:
                    missing.append(f"fold seed {fold_seed} training seed {seed} {pair[0]}/{pair[1]}")
                folders[pair][fold_seed].append(found)
    if missing:
        raise SystemExit(f"error: no current run for {', '.join(missing)}; run without --report-only to make them")
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm_zeroshot,light_two_tower/pretrained,mrse/pretrained",
                        help="comma list of model or model/variant")
    parser.add_argument("--fold-seeds", default="0,1,2", help="comma list of fold seeds (0: the board's folds)")
    parser.add_argument("--train-seeds", default="0", help="comma list of training seeds run under each fold seed")
    parser.add_argument("--report", default="icecat", help="file name (no suffix) of the report in --results")
    parser.add_argument("--reference", default="minilm_zeroshot", help="model or model/variant compared against")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma list of metrics")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "repeated_cv",
                        help="where the runs of other fold seeds and the report go")
    parser.add_argument("--board", type=Path, default=REPO / "results", help="the board (fold seed 0's runs)")
    parser.add_argument("--report-only", action="store_true", help="report the runs on disk, run nothing")
    args = parser.parse_args()
    pairs = model_variants(args.models)
    reference = model_variants(args.reference)[0]
    if reference not in pairs:
        pairs.insert(0, reference)
    fold_seeds = [int(s) for s in args.fold_seeds.split(",") if s.strip()]
    train_seeds = [int(s) for s in args.train_seeds.split(",") if s.strip()]
    if not args.report_only:
        run_missing(pairs, fold_seeds, args.results, args.board, train_seeds)
    folders = collect(pairs, fold_seeds, args.results, args.board, train_seeds)
    rows = report_rows(folders, fold_seeds, reference, [m.strip() for m in args.metrics.split(",")])
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_files.write_text(args.results / f"{args.report}.csv", pl.DataFrame(rows).write_csv())
    text = markdown(rows, fold_seeds, reference, train_seeds)
    atomic_files.write_text(args.results / f"{args.report}.md", text)
    print(text)


if __name__ == "__main__":
    main()
