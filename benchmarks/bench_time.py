"""Wall time of `make bench MODEL=<m>` on the default dataset for every registered model (budget: 5 minutes).

Each model runs as its own process, exactly as `make bench` runs it (install excluded; the dataset cache
and the sentence-feature cache are warmed first, as after any earlier run), into a throw-away results folder.

    python benchmarks/bench_time.py [--models a,b] [--dataset simshop]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

BUDGET_SECONDS = 300


def main() -> None:
    from retrieval_zoo.data.registry import load_dataset
    from retrieval_zoo.models import list_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(list_models()))
    parser.add_argument("--dataset", default="simshop")
    args = parser.parse_args()
    load_dataset(args.dataset)  # generation is cached; the budget is for the bench itself
    rows = []
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as results:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "retrieval_zoo", "bench", "--model", model, "--dataset",
                                   args.dataset, "--results", results, "--wandb", "disabled", "--no-progress"],
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - started
        status = "ok" if done.returncode == 0 else f"FAILED: {done.stderr.strip().splitlines()[-1:]}"
        rows.append((model, seconds, status))
        print(f"{model:18s} {seconds:7.1f} s  ({seconds / BUDGET_SECONDS:.0%} of the 5-minute budget)  {status}",
              flush=True)
    print(f"slowest: {max(rows, key=lambda r: r[1])[0]} at {max(r[1] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
