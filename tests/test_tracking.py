"""W&B as a Lightning user expects it (issue 22, part 5), checked offline by reading the runs' transaction logs
(``run-<id>.wandb``: W&B's record stream, what ``wandb sync`` uploads)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import polars as pl
import pytest
import pytorch_lightning as L
import torch
from pytorch_lightning.loggers import CSVLogger

from retrieval_zoo import tracking
from retrieval_zoo.runner import run_benchmark


# -- reading an offline run --------------------------------------------------------------------------------
def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose chunks
    (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) carry the records."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_run(folder: Path) -> dict:
    """One offline run: its run record, config, summary (last values; a nested value's keys joined by "/"),
    history rows and artifacts."""
    import wandb

    # a finished run's records reach its .wandb file from the wandb-core service a moment after ``finish``
    # returns (read at once, it lacked its run record in 2 of 4 tries on a busy machine): shutting the service down
    # waits for its writes
    wandb.teardown()
    [log] = folder.glob("run-*.wandb")
    found = {"config": {}, "summary": {}, "history": [], "artifacts": []}

    def key(item):
        return item.key or "/".join(item.nested_key)

    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["run"] = record.run
            found["config"] |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            found["config"] |= {i.key: json.loads(i.value_json) for i in record.config.update}
        elif kind == "summary":
            found["summary"] |= {key(i): json.loads(i.value_json) for i in record.summary.update}
        elif kind == "history":
            found["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            found["artifacts"].append(record.artifact)
    return found


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Offline, isolated W&B: nothing under the home folder, no key, no mode from the environment."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_TAGS",
                 "WANDB_JOB_TYPE", "WANDB_DISABLED", "RETRIEVAL_ZOO_WANDB"):
        monkeypatch.delenv(name, raising=False)
    for name, folder in (("WANDB_DATA_DIR", "wb-data"), ("WANDB_CACHE_DIR", "wb-cache"),
                         ("WANDB_CONFIG_DIR", "wb-config")):
        monkeypatch.setenv(name, str(tmp_path / folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


# -- settings ------------------------------------------------------------------------------------------------
def test_the_mode_follows_the_argument_then_the_environment(wandb_env, monkeypatch):
    assert tracking.wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert tracking.wandb_mode() == "offline"
    monkeypatch.setenv("RETRIEVAL_ZOO_WANDB", "disabled")
    assert tracking.wandb_mode() == "disabled"
    assert tracking.wandb_mode("online") == "online"


def test_runs_land_in_wandb_dir_when_set_else_in_the_results_folder(wandb_env, monkeypatch):
    assert tracking.wandb_dir(wandb_env / "results") == str(wandb_env / "results")  # -> results/wandb/
    monkeypatch.setenv("WANDB_DIR", str(wandb_env / "elsewhere"))
    assert tracking.wandb_dir(wandb_env / "results") == str(wandb_env / "elsewhere")  # -> elsewhere/wandb/


# -- the logging interval -------------------------------------------------------------------------------------
class EightSteps(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 2)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_an_epoch_shorter_than_the_interval_still_logs_its_steps(tmp_path, recwarn):
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=20, logger=CSVLogger(tmp_path, name="", version=""),
                        callbacks=[tracking.LogEveryEpoch()], enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(EightSteps())
    assert trainer.log_every_n_steps == 2  # 8 steps an epoch: logged 4 times an epoch
    logged = pl.read_csv(tmp_path / "metrics.csv").drop_nulls("train/loss")
    assert logged["step"].to_list() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert not [w for w in recwarn if "logging interval" in str(w.message)]


# -- a bench run, offline ---------------------------------------------------------------------------------------
def test_a_seed_is_a_run_named_by_seed_in_its_models_group(wandb_env, monkeypatch, label_dataset):
    monkeypatch.setenv("WANDB_DIR", str(wandb_env / "wb"))
    results = wandb_env / "results"
    [result] = run_benchmark("light_two_tower", label_dataset, seeds=[1], results_dir=results, wandb="offline",
                             progress=False, print_table=False,
                             overrides=["trainer.max_epochs=2", "data.eval_batch_size=256",
                                        "trainer.wandb_artifact=true"])
    [folder] = (wandb_env / "wb" / "wandb").glob("offline-run-*")
    assert not (results / "wandb").exists()
    run = read_run(folder)
    assert run["run"].display_name == "seed1"
    assert run["run"].run_group == "toy/light_two_tower/default"
    assert run["run"].job_type == "bench" and run["run"].project == "retrieval_zoo"
    assert {"toy", "light_two_tower", "default"} <= set(run["run"].tags)
    config = run["config"]
    assert config["seed"] == 1 and config["dataset"] == "toy" and config["config_hash"] == result.config_hash
    assert config["trainer"]["max_epochs"] == 2 and config["model"] == result.config["model"]
    summary = run["summary"]
    assert summary["test/ndcg@10"] == pytest.approx(result.metrics["ndcg@10"])
    assert summary["cost/params"] == result.costs["params"]
    assert summary["cost/train_seconds"] == pytest.approx(result.costs["train_seconds"])
    losses = [row for row in run["history"] if "train/loss" in row]
    assert len(losses) >= 4, "per-step losses, several an epoch"
    assert [row["val/ndcg@10"] for row in run["history"] if "val/ndcg@10" in row][:1]
    assert summary["test/per_query/_type"] == "table-file"  # nested keys read as "key/subkey"
    assert summary["test/per_query/nrows"] == result.costs["test_units"]
    [artifact] = [a for a in run["artifacts"] if a.type == "run"]
    assert artifact.name == "run-toy-light_two_tower-default-seed1"
    assert {"metrics.json", "config.yaml", "per_query.parquet"} <= {e.path for e in artifact.manifest.contents}
    assert (result.run_dir / "metrics.json").exists()  # the folder was committed after it was logged


def test_the_leaderboard_is_a_table_and_runs_land_under_results_wandb(wandb_env):
    from retrieval_zoo.plan import _log_to_wandb

    results = wandb_env / "results"
    run_benchmark("bm25", "simshop-tiny", seeds=1, results_dir=results, wandb="offline", progress=False,
                  print_table=False)
    _log_to_wandb(results, "offline")
    folders = sorted((results / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and not (results / "wandb" / "wandb").exists()
    runs = {read_run(f)["run"].job_type: read_run(f) for f in folders}
    assert runs["bench"]["run"].run_group == "simshop-tiny/bm25/default"
    assert "test/ndcg@10" in runs["bench"]["summary"]
    assert not [a for a in runs["bench"]["artifacts"] if a.type == "run"]  # the artifact is opt-in
    board = runs["leaderboard"]["summary"]
    assert board["leaderboard/_type"] == "table-file" and board["leaderboard/nrows"] == 1
