"""Training seeds on Icecat: do they move a row as much as the fold assignment does?

The board plan (``benchmarks/leaderboard.yaml``) ran Icecat at one training seed on the claim that the folds,
not the seeds, carry the variance there. This script measured it (README, "sixth check", with the rule that was
written down before it ran; the median ratio came out 0.87, and the board moved to three seeds on 2026-12-07):

1. runs training seeds ``--seeds`` (default 1 and 2) of the board's Icecat rows at fold seed 0, every key as on
   the board, into ``--results`` (resumable: a seed already there with the board's config hash is skipped);
   training seed 0 is the board's own run;
2. writes ``icecat.md`` / ``icecat.csv`` to ``--results``: per row and metric, each training seed's mean, their
   sd, the sd over fold seeds 0-2 (``results/repeated_cv/icecat.csv``) and the ratio of the two; then the median
   ratio over the rows that have both, and the rule's verdict (``--threshold``).

``--report-only`` rebuilds the report from the runs' committed board rows without running anything.
``--adopt`` (only where the rule says so) puts the measured seeds' runs and rows on the board, as one commit
of the board's store (``retrieval_zoo.reports.adopt_runs``).

    python benchmarks/train_seeds.py
    python benchmarks/train_seeds.py --report-only
    python benchmarks/train_seeds.py --report-only --adopt
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import polars as pl

from retrieval_zoo.plan import read_plan, run_dataset_plan
from retrieval_zoo.reports import adopt_or_refuse, probe_markdown, read_leaderboard, write_probe_report

REPO = Path(__file__).resolve().parents[1]
METRICS = ["ndcg@10", "recall@100"]
DATASET = "icecat"


def board_runs(plan_file: Path) -> list[dict]:
    """The plan's Icecat runs, trained rows first (the untrained ones only complete seed-matched pairs)."""
    runs = read_plan(plan_file)["datasets"][DATASET]
    return sorted(runs, key=lambda run: run["model"] in {"bm25", "minilm_zeroshot"})


def run_seeds(runs: list[dict], seeds: list[int], results_dir: Path) -> None:
    """Each run at exactly ``seeds`` (the plan's resume skips those already made with its config hash)."""
    run_dataset_plan(DATASET, [{**run, "seeds": seeds} for run in runs], len(seeds), results_dir,
                     wandb="disabled", resume=True)


def row_label(model: str, variant: str) -> str:
    return f"{model}/{variant}"


def seed_means(board: pl.DataFrame, probe: pl.DataFrame, seeds: list[int]) -> dict[str, dict[int, dict]]:
    """label -> training seed -> {metric: mean}: seed 0 from the board, the others from the probe's runs, each
    kept only when its config hash equals the board's seed-0 row (the same recipe)."""
    found: dict[str, dict[int, dict]] = {}
    board_rows = board.filter((pl.col("dataset") == DATASET) & (pl.col("seed") == 0))
    for row in board_rows.iter_rows(named=True):
        label = row_label(row["model"], row["variant"])
        found[label] = {0: {m: row[m] for m in METRICS}}
        if not probe.height:
            continue
        same = probe.filter((pl.col("dataset") == DATASET) & (pl.col("model") == row["model"])
                            & (pl.col("variant") == row["variant"])
                            & (pl.col("config_hash") == row["config_hash"]) & pl.col("seed").is_in(seeds))
        for other in same.iter_rows(named=True):
            found[label][int(other["seed"])] = {m: other[m] for m in METRICS}
    return found


def fold_seed_sd(repeated_cv: pl.DataFrame) -> dict[tuple[str, str], float]:
    """(label, metric) -> sd over the fold seeds' means, from repeated_cv.py's report."""
    columns = [c for c in repeated_cv.columns if c.startswith("fold seed ")]
    return {(row["model"], row["metric"]): statistics.stdev(row[c] for c in columns)
            for row in repeated_cv.iter_rows(named=True) if len(columns) >= 2}


def report_rows(means: dict[str, dict[int, dict]], fold_sd: dict[tuple[str, str], float],
                seeds: list[int]) -> list[dict]:
    rows = []
    for label, by_seed in means.items():
        if set(by_seed) != set(seeds) | {0}:
            continue  # a row whose other seeds are not made (yet) is not reported half
        for metric in METRICS:
            values = [by_seed[s][metric] for s in sorted(by_seed)]
            spread = statistics.stdev(values)
            across_folds = fold_sd.get((label, metric))
            rows.append({"row": label, "metric": metric}
                        | {f"seed {s}": by_seed[s][metric] for s in sorted(by_seed)}
                        | {"mean": statistics.fmean(values), "sd over seeds": spread,
                           "sd over fold seeds": across_folds,
                           "ratio": spread / across_folds if across_folds else None})
    return rows


def verdict(rows: list[dict], threshold: float) -> tuple[float | None, str]:
    """The registered rule: the median of the seed/fold sd ratios of the rows measured both ways."""
    ratios = [row["ratio"] for row in rows if row["ratio"] is not None]
    if not ratios:
        return None, "no row is measured both ways: nothing to decide"
    median = statistics.median(ratios)
    if median >= threshold:
        return median, (f"median ratio {median:.2f} >= {threshold}: training seeds carry variance comparable to "
                        f"the folds'; the Icecat board moves to every measured seed")
    return median, f"median ratio {median:.2f} < {threshold}: the plan's one seed stands"


def markdown(rows: list[dict], decision: str) -> str:
    return probe_markdown(
        "Icecat: training seeds against fold seeds",
        "Fold seed 0 (the board's folds); seed 0 is the board's run, the others `results/probes/train_seeds`. "
        "`sd over seeds`: sample sd of the training seeds' means; `sd over fold seeds`: sample sd of the means "
        "under fold seeds 0-2 at training seed 0 (`results/repeated_cv/icecat.csv`). Made by "
        "`python benchmarks/train_seeds.py` (README, sixth check).", rows, decision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="comma list of training seeds to add to the board's 0")
    parser.add_argument("--plan", type=Path, default=REPO / "benchmarks" / "leaderboard.yaml")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "probes" / "train_seeds",
                        help="where the other seeds' runs and the report go")
    parser.add_argument("--board", type=Path, default=REPO / "results", help="the board (seed 0's runs)")
    parser.add_argument("--repeated-cv", type=Path, default=REPO / "results" / "repeated_cv" / "icecat.csv")
    parser.add_argument("--threshold", type=float, default=0.5, help="the registered rule's median ratio")
    parser.add_argument("--report-only", action="store_true", help="report the runs on disk, run nothing")
    parser.add_argument("--adopt", action="store_true",
                        help="put the measured seeds on the board (refused unless the rule says so)")
    args = parser.parse_args()
    seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    if not seeds or 0 in seeds:
        raise SystemExit("error: --seeds lists the seeds besides the board's 0, e.g. --seeds 1,2")
    if not args.report_only:
        run_seeds(board_runs(args.plan), seeds, args.results)
    rows = report_rows(seed_means(read_leaderboard(args.board), read_leaderboard(args.results), seeds),
                       fold_seed_sd(pl.read_csv(args.repeated_cv)), seeds)
    median, decision = verdict(rows, args.threshold)
    text = markdown(rows, decision)
    write_probe_report(args.results, DATASET, rows, text)
    print(text)
    if args.adopt:
        adopt_or_refuse(args.results, args.board, DATASET, seeds,
                        "the rule keeps the board's one seed" if median is None or median < args.threshold else None)

if __name__ == "__main__":
    main()
