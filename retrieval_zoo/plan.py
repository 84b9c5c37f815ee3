"""The leaderboard plan: which (dataset, model, variant) runs make up results/leaderboard.md.

``benchmarks/leaderboard.yaml`` lists per dataset the runs to make, baselines first (so the zoo models are
tested against the best baseline of their dataset). After the runs, the claims of ``benchmarks/claims``
are re-tested and the markdown rebuilt; the table is also logged to W&B (offline without an API key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import yaml

from retrieval_zoo.data.dataset import DatasetError


def read_plan(path: str | Path) -> dict[str, Any]:
    plan = yaml.safe_load(Path(path).read_text()) or {}
    if "datasets" not in plan:
        raise ValueError(f"{path}: a plan needs a 'datasets' mapping of dataset -> list of runs")
    return plan


def run_plan(path: str | Path = "benchmarks/leaderboard.yaml", results_dir: str | Path = "results",
             seeds: int | None = None, only: list[str] | None = None, wandb: str | None = None,
             resume: bool = False) -> pl.DataFrame:
    """Run every (dataset, model, variant) of the plan. ``resume`` skips the seeds already on the leaderboard
    that were made with the plan's resolved config, the current recipe and the same dataset content (the row's
    ``config_hash``, with its run folder on disk), so an interrupted plan continues where it stopped and a row
    made under other settings is rerun."""

    plan = read_plan(path)
    n_seeds = seeds or int(plan.get("seeds", 3))
    for spec, runs in plan["datasets"].items():
        run_dataset_plan(spec, runs, n_seeds, results_dir, only=only, wandb=wandb, resume=resume)
    claims = Path(plan.get("claims", "benchmarks/claims"))
    if claims.exists():
        print(refresh_claims(claims, results_dir))
    _log_to_wandb(results_dir, wandb)
    from retrieval_zoo.reports import read_leaderboard

    return read_leaderboard(results_dir)


def run_dataset_plan(spec: str, runs: list[dict[str, Any]], n_seeds: int, results_dir: str | Path,
                     only: list[str] | None = None, wandb: str | None = None, resume: bool = False) -> None:
    """The plan's runs of one dataset spec (each: model, optional variant, ``set`` and ``seeds``, a count or a
    list); with ``resume``, seeds already on the board with the same config hash are skipped (see
    :func:`run_plan`)."""
    from retrieval_zoo.data.registry import load_dataset
    from retrieval_zoo.models.registry import load_config
    from retrieval_zoo.runner import config_hash, dataset_identity, run_benchmark

    results_dir = Path(results_dir)
    try:
        data = load_dataset(spec)
    except DatasetError as error:
        print(f"skipping dataset {spec}: {error}")
        return
    identity = dataset_identity(spec if ":" in spec else data.name, data)
    made = finished_runs(results_dir, identity.key, identity.fingerprint, identity.label_data) if resume else {}
    for run in runs:
        if only and run["model"] not in only:
            continue
        config = load_config(run["model"], run.get("variant"), run.get("set"))
        wanted = config_hash(config, identity.fingerprint, identity.label_data)
        variant = config["variant"]
        todo = [seed for seed in seed_list(run.get("seeds", n_seeds))
                if made.get((run["model"], variant, seed)) != wanted]
        if not todo:
            print(f"resume: {spec} {run['model']}/{variant} already on the leaderboard (config {wanted})")
            continue
        run_benchmark(run["model"], data if ":" not in spec else spec, todo, run.get("variant"),
                      run.get("set"), results_dir, wandb, progress=False)


def seed_list(seeds: int | list[int]) -> list[int]:
    """A run's ``seeds``: a count (seeds 0..n-1) or an explicit list (e.g. [1, 2] to add seeds to a board)."""
    return [int(seed) for seed in seeds] if isinstance(seeds, list) else list(range(int(seeds)))


def finished_runs(results_dir: Path, dataset: str, fingerprint: str, label_data: bool = True
                  ) -> dict[tuple[str, str, int], str]:
    """(model, variant, seed) -> config hash of ``dataset``'s board rows whose run folder still exists. Rows
    from before the hash column get theirs from the config saved in their run folder, when they were made
    under the current recipe (else none: they are rerun)."""
    from retrieval_zoo.reports import RECIPE, read_leaderboard
    from retrieval_zoo.runner import config_hash

    board = read_leaderboard(results_dir)
    if not board.height:
        return {}
    made = {}
    for row in board.filter(pl.col("dataset") == dataset).iter_rows(named=True):
        folder = results_dir / "runs" / dataset / row["model"] / row["variant"] / f"seed{row['seed']}"
        if not folder.is_dir():
            continue
        found = row.get("config_hash")
        if not found and str(row.get("recipe")) == RECIPE and (folder / "config.yaml").exists():
            found = config_hash(yaml.safe_load((folder / "config.yaml").read_text()), fingerprint, label_data)
        if found:
            made[(row["model"], row["variant"], int(row["seed"]))] = str(found)
    return made


def refresh_claims(claims_file: str | Path, results_dir: str | Path = "results") -> str:
    """Re-test every claim whose runs exist, write results/claims.csv and rebuild leaderboard.md."""
    from retrieval_zoo.store import board_lock

    results_dir = Path(results_dir)
    with board_lock(results_dir):
        return _refresh_claims(Path(claims_file), results_dir)


def _refresh_claims(claims_file: Path, results_dir: Path) -> str:
    from retrieval_zoo import atomic_files
    from retrieval_zoo.reports import read_leaderboard, write_markdown
    from retrieval_zoo.significance import check_claims

    board = read_leaderboard(results_dir)
    previous = results_dir / "claims.csv"
    claims = check_claims(claims_file, board, known=pl.read_csv(previous) if previous.exists() else None,
                          results_dir=results_dir)
    if claims.height:
        atomic_files.write_text(results_dir / "claims.csv", claims.write_csv())
    write_markdown(results_dir, board)
    return str(claims) if claims.height else "no claim has its runs yet"


def _log_to_wandb(results_dir: Path, mode: str | None) -> None:
    """The leaderboard as a W&B table (``tracking.log_leaderboard``: mode, folder and WANDB_* variables as for
    the runs); never fails the run."""
    from retrieval_zoo.tracking import log_leaderboard

    log_leaderboard(results_dir, mode)
