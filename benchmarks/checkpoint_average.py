"""Checkpoint averaging on Icecat: does the average of the best checks beat the best check on valid?

The seventh probe (README, *Pretrained starts*), with its rule written down before it ran. Training seeds move
an Icecat row's NDCG@10 as much as the fold assignment does (the sixth check), and selection keeps the single
check that scored best on about 22 valid queries. ``validation.average_top_k: 3`` keeps instead the uniform
weight average of the three best checks (``retrieval_zoo/validation.py``), weighed against the start as the
best check was.

1. runs the four ``pretrained`` rows at training seeds ``--seeds`` (default 0-2), fold seed 0, with
   ``validation.average_top_k=3`` and every other key as on the board, into ``--results`` (resumable). Training
   is the board's, step for step: only what selection keeps differs, and the report checks that every check's
   valid score equals the board run's;
2. writes ``icecat.md`` / ``icecat.csv`` to ``--results``: per row and seed the kept state's valid NDCG@10 and
   Recall@100 (mean of the 5 inner folds, ``benchmarks/selection_check.py``'s rule), the board's and the probe's,
   and the registered rule's verdict on their means over every row and seed. The test figures (NDCG@10 and
   Recall@100 per seed, and the largest p over the seeds against zero-shot MiniLM of the same seed) are reported
   beside them and are not part of the rule.

The comparison on valid is biased against the average: the best check's valid score is the largest of several
noisy ones, the average's is not picked that way.

``--adopt`` (only where the rule says so) puts the probe's runs on the board (``reports.adopt_runs``); the
variants' configs must then carry ``validation: {average_top_k: 3}`` so that the plan finds the rows current.

    python benchmarks/checkpoint_average.py
    python benchmarks/checkpoint_average.py --report-only [--adopt]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import polars as pl

from retrieval_zoo.evaluation import per_query_p_value
from retrieval_zoo.plan import run_dataset_plan
from retrieval_zoo.reports import adopt_or_refuse, probe_markdown, write_probe_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selection_check import selected_states  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASET = "icecat"
MODELS = ["light_two_tower", "mgdspr", "mmse", "mrse"]
VARIANT = "pretrained"
OVERRIDE = "validation.average_top_k=3"
REFERENCE = "minilm_zeroshot/default"
METRICS = ["ndcg@10", "recall@100"]


def run_probe(seeds: list[int], results_dir: Path) -> None:
    runs = [{"model": model, "variant": VARIANT, "seeds": seeds, "set": [OVERRIDE]} for model in MODELS]
    run_dataset_plan(DATASET, runs, len(seeds), results_dir, wandb="disabled", resume=True)


def run_dir(results_dir: Path, model_variant: str, seed: int) -> Path:
    model, _, variant = model_variant.partition("/")
    return results_dir / "runs" / DATASET / model / (variant or "default") / f"seed{seed}"


def kept_on_valid(folder: Path) -> dict[str, float] | None:
    """The kept state's valid metrics, mean over the folds, and how many folds kept an average."""
    path = folder / "valid_curve.csv"
    if not path.exists():
        return None
    states = selected_states(pl.read_csv(path))
    averaged = int((states["averaged"] >= 2).sum()) if "averaged" in states.columns else 0
    return {**{m: float(states[f"kept {m}"].mean()) for m in METRICS}, "folds averaged": averaged}


def same_trajectory(probe: Path, board: Path) -> bool | None:
    """Whether every check the probe's run scored equals the board run's (the same training); None: not
    comparable (a curve missing)."""
    if not (probe / "valid_curve.csv").exists() or not (board / "valid_curve.csv").exists():
        return None
    checks = pl.read_csv(probe / "valid_curve.csv").filter(pl.col("averaged") <= 1).select("fold", "epoch", *METRICS)
    joined = checks.join(pl.read_csv(board / "valid_curve.csv").select("fold", "epoch", *METRICS),
                         on=["fold", "epoch"], suffix="_board", how="left")
    return all(((joined[m] - joined[f"{m}_board"]).abs() < 1e-12).all() for m in METRICS)


def per_query_of(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "per_query.parquet")


def row_report(model: str, seeds: list[int], probe_dir: Path, board_dir: Path) -> list[dict]:
    label = f"{model}/{VARIANT}"
    rows = []
    for seed in seeds:
        probe, board = run_dir(probe_dir, label, seed), run_dir(board_dir, label, seed)
        probe_valid, board_valid = kept_on_valid(probe), kept_on_valid(board) or {}
        if probe_valid is None:
            continue  # not made yet
        reference = per_query_of(run_dir(board_dir, REFERENCE, seed))
        scores = per_query_of(probe)
        rows.append({"row": label, "seed": seed,
                     "board valid ndcg@10": board_valid.get("ndcg@10"), "probe valid ndcg@10": probe_valid["ndcg@10"],
                     "board valid recall@100": board_valid.get("recall@100"),
                     "probe valid recall@100": probe_valid["recall@100"],
                     "folds averaged": probe_valid["folds averaged"],
                     "same training": same_trajectory(probe, board),
                     **{f"probe test {m}": mean_of(scores, m) for m in METRICS},
                     **{f"p {m} vs start": per_query_p_value(scores, reference, m) for m in METRICS}})
    return rows


def mean_of(per_query: pl.DataFrame, metric: str) -> float:
    return float(per_query.filter(pl.col("metric") == metric)["value"].mean())


# The board's kept valid figures the rule was registered with (README, seventh probe): the mean over the four rows x
# three seeds x five inner folds, read before the probe ran (two of the twelve board curves, light_two_tower's and
# mrse's seed 0, only from the README's earlier reading of them: their run folders had lost the curve files;
# light_two_tower's was restored since by a rerun that reproduced it, and matches).
REGISTERED_BOARD = {"ndcg@10": 0.6357, "recall@100": 0.8888}


def verdict(rows: list[dict], expected: int) -> str:
    """The registered rule: the probe's mean kept valid NDCG@10 over every row and seed rises above the board's
    registered figure, and its Recall@100 does not fall below the board's."""
    if len(rows) < expected:
        return f"{len(rows)} of {expected} runs made: no verdict yet"
    probe = {m: statistics.fmean(row[f"probe valid {m}"] for row in rows) for m in METRICS}
    figures = (f"valid NDCG@10 {REGISTERED_BOARD['ndcg@10']:.4f} (board) -> {probe['ndcg@10']:.4f}, "
               f"Recall@100 {REGISTERED_BOARD['recall@100']:.4f} -> {probe['recall@100']:.4f}")
    adopted = probe["ndcg@10"] > REGISTERED_BOARD["ndcg@10"] and probe["recall@100"] >= REGISTERED_BOARD["recall@100"]
    return f"{'adopted' if adopted else 'rejected'}: {figures}"


def markdown(rows: list[dict], decision: str) -> str:
    return probe_markdown(
        "Icecat: the average of the three best checks against the best check",
        f"Fold seed 0; `{OVERRIDE}` on every `pretrained` row, every other key as on the board. Valid: the kept "
        "state's metrics, mean of the 5 inner folds (`benchmarks/selection_check.py`'s rule); `folds averaged`: "
        "folds whose kept state is the average. Test figures and p (ranx's paired t-test against "
        f"{REFERENCE} of the same seed) are reported, not used. Made by `python benchmarks/checkpoint_average.py`"
        " (README, seventh probe).", rows, decision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "probes" / "checkpoint_average")
    parser.add_argument("--board", type=Path, default=REPO / "results")
    parser.add_argument("--report-only", action="store_true", help="report the runs on disk, run nothing")
    parser.add_argument("--adopt", action="store_true",
                        help="put the probe's runs on the board (refused unless the rule adopts the recipe)")
    args = parser.parse_args()
    seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    if not args.report_only:
        run_probe(seeds, args.results)
    rows = [row for model in MODELS for row in row_report(model, seeds, args.results, args.board)]
    decision = verdict(rows, len(MODELS) * len(seeds))
    text = markdown(rows, decision)
    write_probe_report(args.results, DATASET, rows, text)
    print(text)
    if args.adopt:
        adopt_or_refuse(args.results, args.board, DATASET, seeds,
                        None if decision.startswith("adopted") else decision)

if __name__ == "__main__":
    main()
