"""Experiment tracking with Weights & Biases, laid out as a Lightning user expects it.

One W&B run per seed (``wandb_logger``, handed to Lightning's Trainer beside the CSV logger):

- named ``seed<k>`` and grouped by ``<dataset>/<model>/<variant>`` (W&B shows a group's seeds as mean and spread),
  job type ``bench``, tagged with the dataset, model and variant;
- config: the resolved config (defaults < model YAML < variant < ``--set``), the seed and the dataset; at the
  end the config hash, the dataset spec and its fingerprint;
- history: the per-step training losses (``train/*``; Lightning's ``log_every_n_steps``, capped by
  ``LogEveryEpoch`` at a quarter of an epoch's steps so small data logs too) and the valid metrics per check
  (``val/*``);
- summary (``log_final``): the test metrics (``test/*``) and the cost columns of the board (``cost/*``);
- tables: ``test/per_query`` (one row per test unit: its query, group and every metric);
- optionally (``trainer.wandb_artifact: true``) the run folder as an artifact of type ``run``.

The ``leaderboard`` command logs the board as a table in a run of its own (``log_leaderboard``).

Where and how: the mode is ``--wandb`` (online, offline, disabled), else ``RETRIEVAL_ZOO_WANDB``, else
``WANDB_MODE``, else online with ``WANDB_API_KEY`` set and offline without. Runs are written under ``WANDB_DIR``
when set (``$WANDB_DIR/wandb/``), else under the results folder (``results/wandb/``). ``WANDB_PROJECT`` (default
``retrieval_zoo``), ``WANDB_ENTITY``, ``WANDB_RUN_GROUP``, ``WANDB_JOB_TYPE``, ``WANDB_TAGS`` and the rest of
W&B's variables are respected. W&B never fails a run: an error is printed as one line and tracking stops.
"""

from __future__ import annotations

import math
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as L
from pytorch_lightning.loggers import WandbLogger

if TYPE_CHECKING:
    from retrieval_zoo.runner import RunResult

PROJECT = "retrieval_zoo"
ARTIFACT_KEY = "wandb_artifact"  # trainer.wandb_artifact: log the run folder as an artifact
TRACKING_KEYS = (ARTIFACT_KEY,)  # keys of the trainer section that are ours, not Lightning Trainer arguments
MODES = ("online", "offline", "disabled")
_LEGACY_MODES = {"dryrun": "offline", "run": "online"}
_ours: set[str] = set()  # ids of the W&B runs this process started (a failed seed leaves its run open)


def wandb_mode(requested: str | None = None) -> str:
    """online, offline or disabled; see the module docstring for the order the settings are read in."""
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        default = "disabled"
    else:
        default = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    mode = requested or os.environ.get("RETRIEVAL_ZOO_WANDB") or os.environ.get("WANDB_MODE") or default
    return _LEGACY_MODES.get(mode, mode)


def wandb_dir(results_dir: str | Path) -> str:
    """The folder W&B writes its ``wandb/`` folder into: ``WANDB_DIR`` when set, else the results folder, so runs
    land in ``results/wandb/``. Passed explicitly: W&B reads its environment once per process (``wandb.setup``),
    so a ``WANDB_DIR`` set later, e.g. in a notebook, would otherwise be ignored."""
    folder = Path(os.environ.get("WANDB_DIR") or results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def _tags(*ours: str) -> list[str]:
    given = [t.strip() for t in os.environ.get("WANDB_TAGS", "").split(",") if t.strip()]
    return list(dict.fromkeys([*given, *ours]))


class ZooWandbLogger(WandbLogger):
    """Lightning's WandbLogger without the ``anonymous`` argument it always passes on: W&B >= 0.19 ignores it and
    warns "The anonymous setting has no effect" at every run start."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)


def wandb_logger(config: dict[str, Any], dataset_slug: str, seed: int, results_dir: str | Path,
                 mode: str | None = None) -> WandbLogger | None:
    """The seed's W&B logger with its run started (so a W&B failure shows here, not inside training), or None
    when W&B is disabled or fails to start."""
    mode = wandb_mode(mode)
    if mode == "disabled":
        return None
    try:
        _finish_abandoned()
        model, variant = config["name"], config["variant"]
        logger = ZooWandbLogger(
            name=f"seed{seed}", save_dir=wandb_dir(results_dir),
            project=os.environ.get("WANDB_PROJECT") or PROJECT,
            group=os.environ.get("WANDB_RUN_GROUP") or f"{dataset_slug}/{model}/{variant}",
            job_type=os.environ.get("WANDB_JOB_TYPE") or "bench",
            tags=_tags(dataset_slug, model, variant), mode=mode,
            config={**config, "seed": seed, "dataset": dataset_slug},
        )
        run = logger.experiment  # rank 0 starts the run; other ranks get Lightning's dummy
        if _is_run(run):
            _ours.add(run.id)
        return logger
    except Exception as error:  # noqa: BLE001 - W&B must never fail a run
        print(f"W&B logging disabled: {_one_line(error)}")
        return None


def _is_run(run: Any) -> bool:
    """A real W&B run (not Lightning's DummyExperiment on ranks > 0, nor a disabled run)."""
    from wandb.sdk.wandb_run import Run

    return isinstance(run, Run) and not run.disabled


def _finish_abandoned() -> None:
    """A seed that failed left its run open; a new WandbLogger would log into it (Lightning reuses wandb.run)."""
    import wandb

    if wandb.run is not None and wandb.run.id in _ours:
        _ours.discard(wandb.run.id)
        wandb.run.finish(exit_code=1)


class LogEveryEpoch(L.Callback):
    """Caps ``Trainer(log_every_n_steps)`` so an epoch logs its training losses ``points`` times at least: the
    per-step losses reach the loggers on small data too (Lightning logs nothing within an epoch shorter than the
    interval, and warns about it); a long epoch keeps the configured interval. The epoch is measured as
    Lightning measures it for ``estimated_stepping_batches``: the train loader after ``limit_train_batches`` and
    the distributed sampler, over ``accumulate_grad_batches``."""

    def __init__(self, points: int = 4) -> None:
        self.points = points

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        configured = trainer.log_every_n_steps
        if stage != "fit" or not configured or not trainer.loggers:
            return
        trainer.log_every_n_steps = 0  # no interval to warn about while the loader is measured
        try:
            trainer.fit_loop.setup_data()  # what Lightning would do next; it keeps the loader it builds
        finally:
            trainer.log_every_n_steps = configured
        batches = trainer.num_training_batches
        if 0 < batches < math.inf:
            steps = math.ceil(batches / max(1, trainer.accumulate_grad_batches))
            trainer.log_every_n_steps = max(1, min(configured, steps // self.points))


def is_wandb(logger: Any) -> bool:
    return isinstance(logger, WandbLogger)


def staged_folder(run_dir: Path) -> Path | None:
    """Where this process staged ``run_dir`` (``results/runs/.staging/<host>-<pid>-<n>/runs/...``, see
    store.py), the latest staging if several hold it; else ``run_dir`` itself once committed; else None."""
    from retrieval_zoo import store

    run_dir = Path(run_dir)
    results_dir = run_dir.parents[4]  # results/runs/<dataset>/<model>/<variant>/seed<k>
    prefix = f"{socket.gethostname()}-{os.getpid()}-"
    stagings = (results_dir / "runs" / store.STAGING).glob(f"{prefix}*")
    found = [s for s in stagings if s.name[len(prefix):].isdigit()
             and store.staged_path(s, results_dir, run_dir).is_dir()]
    if found:
        latest = max(found, key=lambda s: int(s.name[len(prefix):]))
        return store.staged_path(latest, results_dir, run_dir)
    return run_dir if run_dir.is_dir() else None


def log_final(logger: WandbLogger, result: RunResult, folder: Path | None, artifact: bool | None = None) -> None:
    """The seed's end: test metrics and costs to the summary, the per-query table, the run folder as an artifact
    (``artifact``; default: the config's ``trainer.wandb_artifact``), then the run is finished. ``folder``
    holds the run's files (its staged place while the invocation runs: W&B copies what it logs at once)."""
    run = logger.experiment
    if not _is_run(run):
        return
    try:
        run.config.update({"config_hash": result.config_hash, "dataset_spec": result.dataset_spec,
                           "dataset_fingerprint": result.dataset_fingerprint}, allow_val_change=True)
        run.summary.update({f"test/{k}": v for k, v in result.metrics.items()}
                           | {f"cost/{k}": v for k, v in result.costs.items() if _scalar(v)})
        if folder is not None and (folder / "per_query.parquet").exists():
            run.log({"test/per_query": per_query_table(folder)})
        if artifact is None:
            artifact = bool((result.config.get("trainer") or {}).get(ARTIFACT_KEY, False))
        if artifact and folder is not None:
            run.log_artifact(run_artifact(result, folder))
        logger.finalize("success")
    finally:
        _ours.discard(run.id)
        run.finish()


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str)) and not (isinstance(value, float) and math.isnan(value))


def per_query_table(folder: Path):
    """``per_query.parquet`` (unit, metric, value) as a W&B table: one row per test unit, its query and group,
    then one column per metric."""
    import polars as pl
    import wandb

    long = pl.read_parquet(folder / "per_query.parquet")
    wide = long.pivot(on="metric", index="unit_id", values="value", aggregate_function="first")
    wide = wide.select("unit_id", *sorted(c for c in wide.columns if c != "unit_id"))
    if (folder / "units.parquet").exists():
        units = pl.read_parquet(folder / "units.parquet")
        keep = [c for c in ("unit_id", "query_id", "group") if c in units.columns]
        metrics = [c for c in wide.columns if c != "unit_id"]
        wide = wide.join(units.select(keep).unique("unit_id"), on="unit_id", how="left").select(*keep, *metrics)
    return wandb.Table(columns=wide.columns, data=[list(row) for row in wide.sort("unit_id").iter_rows()])


def artifact_name(result: RunResult) -> str:
    """W&B artifact names allow letters, digits, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"run-{result.dataset}-{result.model}-{result.variant}-seed{result.seed}")


def run_artifact(result: RunResult, folder: Path):
    import wandb

    artifact = wandb.Artifact(artifact_name(result), type="run",
                              description=f"results/runs/{result.dataset}/{result.model}/{result.variant}/"
                                          f"seed{result.seed}",
                              metadata={"metrics": result.metrics, "config_hash": result.config_hash,
                                        "dataset_spec": result.dataset_spec})
    artifact.add_dir(str(folder))  # policy "mutable": the files are copied now, before the folder is moved in
    return artifact


def log_leaderboard(results_dir: str | Path, mode: str | None = None) -> None:
    """The leaderboard (``results/leaderboard.csv``) as a W&B table, in a run of job type ``leaderboard``."""
    mode = wandb_mode(mode)
    if mode == "disabled":
        return
    try:
        import wandb

        from retrieval_zoo.quiet import quiet
        from retrieval_zoo.reports import read_leaderboard

        quiet()
        _finish_abandoned()
        board = read_leaderboard(Path(results_dir))
        run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, dir=wandb_dir(results_dir),
                         job_type=os.environ.get("WANDB_JOB_TYPE") or "leaderboard",
                         group=os.environ.get("WANDB_RUN_GROUP") or "leaderboard", name="leaderboard",
                         tags=_tags("leaderboard"), mode=mode)
        try:
            run.log({"leaderboard": wandb.Table(columns=board.columns, data=[list(r) for r in board.iter_rows()])})
        finally:
            run.finish()
    except Exception as error:  # noqa: BLE001 - W&B must never fail a run
        print(f"W&B leaderboard logging skipped: {_one_line(error)}")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
