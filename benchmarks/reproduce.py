"""Does a change move results? Rerun runs and compare their metrics with a reference, to a tolerance.

Two uses:

- ``--save ref.json`` / ``--check ref.json``: every registered model and variant, one seed, a few training steps
  on simshop-tiny (the shapes and code paths of the real runs at test sizes). Save before a refactor, check
  after: a refactor that keeps results must reproduce every metric to 1e-6.
- ``--rows icecat:bm25/default,icecat:mmse/default``: rerun committed leaderboard rows (seed 0, the plan's
  settings) and compare with their row on ``results/leaderboard.csv``. Each rerun is its own ``bench`` process
  with the torch thread count the row was made with (its run folder's ``meta.json``, kept since 2026-12-07, or
  ``--threads``): a thread count changes the order of training's sums, and after a few simshop epochs the last
  bits reach the metrics (simshop mmse/default seed 0, made at 1 thread: rerun at 2, NDCG@10 0.93404 -> 0.93436;
  at 1, every score file byte-identical).

Prints one line per run (max |difference| over the metrics) and exits 1 if any exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from retrieval_zoo.models import list_models, list_variants
from retrieval_zoo.reports import read_leaderboard
from retrieval_zoo.runner import run_benchmark

FAST = ["trainer.max_steps=3", "trainer.max_epochs=1", "data.eval_batch_size=256", "validation.max_queries=50"]
METRICS = ("ndcg@10", "ndcg@100", "recall@10", "recall@100", "recall@500", "mrr@10", "rel@10", "p_recall@100")


def tiny_runs() -> dict[str, dict[str, float]]:
    """model/variant -> metrics, every registered model and variant, seed 0, a few steps on simshop-tiny."""
    found = {}
    with tempfile.TemporaryDirectory(prefix="rz-reproduce-") as results:
        for model in list_models():
            for variant in list_variants(model):
                overrides = FAST + (["trainer.max_steps=0"] if model == "minilm_zeroshot" else [])
                [result] = run_benchmark(model, "simshop-tiny", [0], None if variant == "default" else variant,
                                         overrides, results, wandb="disabled", progress=False, print_table=False)
                found[f"{model}/{variant}"] = {m: result.metrics[m] for m in METRICS if m in result.metrics}
                print(f"{model}/{variant}: ndcg@10 {found[f'{model}/{variant}']['ndcg@10']:.6f}", flush=True)
    return found


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def row_threads(run_folder: Path, override: int | None) -> tuple[str | None, str]:
    """The torch thread count to rerun a row with, and where it came from (None: this machine's default)."""
    if override:
        return str(override), "--threads"
    meta = run_folder / "meta.json"
    threads = json.loads(meta.read_text()).get("versions", {}).get("torch_threads") if meta.exists() else None
    if threads:
        return str(threads), "the row's meta.json"
    return None, "not recorded with the row (made before 2026-12-07): this machine's default"


def rerun_row(spec: str, model: str, variant: str, threads: str | None, scratch: Path) -> dict[str, float]:
    """Seed 0 of one row through ``python -m retrieval_zoo bench`` in a process of its own (thread pools are
    sized when torch starts), its metrics read back from the scratch run folder."""
    environment = {**os.environ, **({name: threads for name in THREAD_VARIABLES} if threads else {})}
    subprocess.run([sys.executable, "-m", "retrieval_zoo", "bench", "--dataset", spec, "--model", model,
                    "--variant", variant, "--results", str(scratch), "--wandb", "disabled", "--no-progress"],
                   env=environment, check=True, stdout=subprocess.DEVNULL)
    found = read_leaderboard(scratch).filter((pl.col("model") == model) & (pl.col("variant") == variant)
                                             & (pl.col("seed") == 0))
    return json.loads((scratch / found["run_dir"][0] / "metrics.json").read_text())


def board_rows(rows: list[str], results: Path, threads: int | None = None
               ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """(rerun, committed) metrics of ``dataset:model/variant`` rows, seed 0."""
    board = read_leaderboard(results)
    rerun, committed = {}, {}
    with tempfile.TemporaryDirectory(prefix="rz-reproduce-") as scratch:
        for number, row in enumerate(rows):
            dataset, _, name = row.partition(":")
            model, _, variant = name.partition("/")
            variant = variant or "default"
            found = board.filter((pl.col("dataset") == dataset) & (pl.col("model") == model)
                                 & (pl.col("variant") == variant) & (pl.col("seed") == 0))
            if not found.height:
                raise SystemExit(f"error: no seed-0 row {row} on {results}/leaderboard.csv")
            spec = found["dataset_spec"][0] if "dataset_spec" in found.columns else dataset
            thread_count, source = row_threads(results / found["run_dir"][0], threads)
            print(f"{row}: rerun with {thread_count or 'default'} torch threads ({source})", flush=True)
            metrics = rerun_row(spec, model, variant, thread_count, Path(scratch) / str(number))
            rerun[row] = {m: metrics[m] for m in METRICS if m in metrics}
            committed[row] = {m: float(found[m][0]) for m in rerun[row] if found[m][0] is not None}
    return rerun, committed


def compare(got: dict[str, dict[str, float]], expected: dict[str, dict[str, float]], tolerance: float) -> bool:
    ok = True
    for name in sorted(expected):
        if name not in got:
            print(f"{name}: missing from the rerun")
            ok = False
            continue
        diffs = [abs(got[name][m] - v) for m, v in expected[name].items() if m in got[name] and not math.isnan(v)]
        worst = max(diffs, default=0.0)
        verdict = "ok" if worst <= tolerance else "MOVED"
        ok &= worst <= tolerance
        print(f"{name}: max |diff| {worst:.2e} {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the tiny runs' metrics here")
    parser.add_argument("--check", type=Path, help="compare the tiny runs with this reference")
    parser.add_argument("--rows", default=None, help="comma-separated dataset:model/variant board rows to rerun")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the --rows reruns (default: each row's own, from its meta.json)")
    args = parser.parse_args()
    ok = True
    if args.save or args.check:
        found = tiny_runs()
        if args.save:
            args.save.write_text(json.dumps(found, indent=2, sort_keys=True))
        if args.check:
            ok &= compare(found, json.loads(args.check.read_text()), args.tolerance)
    if args.rows:
        rerun, committed = board_rows(args.rows.split(","), args.results, args.threads)
        ok &= compare(rerun, committed, args.tolerance)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
