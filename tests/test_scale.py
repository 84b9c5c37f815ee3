"""benchmarks/scale.py end to end on a tiny generated ESCI catalogue: every requested run measured, its stages
timed, its memory read, the feature cache reused and the approximate index compared with Flat."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_scale_benchmark_measures_every_run_and_the_index(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "RETRIEVAL_ZOO_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)}
    finished = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--products", "3000", "--models",
         "bm25,light_two_tower,minilm_zeroshot,mgdspr/pretrained", "--out", str(out), "--threads", "1",
         "--data", str(tmp_path / "data"), "--ann", "HNSW32", "IVF16,Flat", "--stop-over-budget"],
        env=env, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = {row["model"] + "/" + row["variant"]: row for row in csv.DictReader((out / "scale.csv").open())}
    assert set(rows) == {"bm25/default", "light_two_tower/default", "minilm_zeroshot/default",
                         "mgdspr/pretrained"}
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["detail"])
        assert float(row["wall_s"]) > 0 and 0.1 < float(row["peak_rss_gib"]) < 8, name
        for stage in ("load", "features", "index", "search", "metrics"):
            assert float(row[f"{stage}_seconds"]) >= 0, (name, stage)
        assert 0 <= float(row["metric_ndcg@10"]) <= 1
        assert float(row["others_cpu_pct"]) >= 0, name  # measured: this host has /proc/stat
    assert rows["light_two_tower/default"]["one_epoch"] == "True"  # one epoch where the config says more
    # minilm_zeroshot encodes the MiniLM vectors (cold); mgdspr/pretrained reads them back
    assert rows["minilm_zeroshot/default"]["encoded_features"] == "True"
    assert rows["mgdspr/pretrained"]["encoded_features"] == "False"
    report = (out / "scale.md").read_text()
    assert "read them back (warm)" in report and "GPU: not measured" in report
    assert "Other processes' CPU" in report or "**Busy host**" in report
    indexes = {row["index"]: row for row in csv.DictReader((out / "ann.csv").open())}
    assert set(indexes) == {"Flat", "HNSW32", "IVF16,Flat"}
    assert float(indexes["Flat"]["overlap@100"]) == 1.0
    assert 0.5 < float(indexes["HNSW32"]["overlap@100"]) <= 1.0


def test_host_busy_seconds_reads_the_busy_columns_of_proc_stat(load_benchmark):
    scale = load_benchmark("scale")
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice: idle and iowait are not busy
    line = f"cpu  {tick} {tick} {2 * tick} 999999 777777 {tick} 0 {tick} 0 0\ncpu0 1 2 3 4\n"
    assert scale.host_busy_seconds(line) == 6.0


def test_others_cpu_percent_is_the_host_busy_time_less_the_runs_own(load_benchmark):
    scale = load_benchmark("scale")
    # 100 s of wall: the host was busy 180 CPU seconds, 150 of them the run's: others 30% of one core
    assert scale.others_cpu_percent(1000.0, 1180.0, own_cpu_s=150.0, wall_s=100.0) == 30.0
    assert scale.others_cpu_percent(1000.0, 1100.0, own_cpu_s=101.0, wall_s=100.0) == 0.0  # rounding: never < 0
    assert scale.others_cpu_percent(None, 1100.0, own_cpu_s=1.0, wall_s=100.0) is None


def test_the_report_says_when_the_host_was_busy(load_benchmark):
    scale = load_benchmark("scale")
    quiet, busy = scale.Run("bm25", "default"), scale.Run("mrse", "default")
    quiet.others_cpu_pct, busy.others_cpu_pct = 1.5, 95.0
    assert "**Busy host**" in scale.host_load_line([quiet, busy]) and "mrse/default" in scale.host_load_line(
        [quiet, busy])
    assert "at most 1.5% of one core" in scale.host_load_line([quiet])
    assert "not measured" in scale.host_load_line([scale.Run("bm25", "default")])


PROGRESS_LOG = """inputs ready in 900.0 s (features, tokens; hard negatives come with the first train loader)  rss 3.7 GiB
epoch 1/1  100/1000 steps  60.0s  rss 3.67 GiB (peak 4.34)  train/loss 7.159
epoch 1/1  200/1000 steps  120.0s  rss 3.67 GiB (peak 4.34)  train/loss 7.001
"""


def test_the_last_progress_line_gives_the_epochs_rate_and_what_is_left(load_benchmark):
    scale = load_benchmark("scale")
    progress = scale.last_progress(PROGRESS_LOG)
    assert (progress.epoch, progress.done, progress.total, progress.seconds) == (1, 200, 1000, 120.0)
    assert progress.remaining_s == 480.0  # 800 steps at 0.6 s each
    assert "step 200/1,000" in progress.text() and "8 min of the epoch to go" in progress.text()
    assert scale.last_progress("inputs ready in 3.0 s\nepoch 1/1  0/10 steps  0.0s") is None


def test_a_run_is_over_budget_only_once_its_training_alone_passes_the_budget(load_benchmark):
    scale = load_benchmark("scale")
    budget = scale.TIME_BUDGET_S
    # 8 more minutes of training: within the budget at 20 min of wall; over it once the wall less the line's
    # interval (it may be that old) plus those 8 minutes passes 30
    assert scale.over_budget(PROGRESS_LOG, 20 * 60, cold_features=False) is None
    reason = scale.over_budget(PROGRESS_LOG, budget - 7 * 60 + scale.PROGRESS_INTERVAL_S + 1, cold_features=False)
    assert reason.startswith("over budget in train") and "step 200/1,000" in reason
    # a pretrained run that encoded its features is judged without them (the 900 s of "inputs ready")
    assert scale.over_budget(PROGRESS_LOG, budget - 7 * 60 + scale.PROGRESS_INTERVAL_S + 1, cold_features=True) is None
    assert "without its 900 s cold features" in scale.over_budget(PROGRESS_LOG, 40 * 60, cold_features=True)
    # under two minutes of training the rate is not judged, however late
    first_minute = PROGRESS_LOG.rsplit("epoch", 1)[0]
    assert scale.over_budget(first_minute, 10 * budget, cold_features=False) is None


def test_a_stop_reason_stops_the_run_and_a_timeout_in_training_says_how_far_it_got(load_benchmark, tmp_path,
                                                                                    monkeypatch):
    scale = load_benchmark("scale")
    monkeypatch.setattr(scale, "BUDGET_POLL_S", 0.1)
    sleeper = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    reasons = iter([None, "over budget in train: test"])
    outcome = scale.run_child(sleeper, tmp_path / "run.log", dict(os.environ), timeout_s=50,
                              stop_reason=lambda elapsed: next(reasons))
    assert (outcome.status, outcome.detail) == ("over budget", "over budget in train: test")
    assert outcome.wall_s < 30  # killed, not waited for
    run = scale.Run("mrse", "pretrained", status=outcome.status, detail=outcome.detail)
    assert scale.budget_verdict(run, 45).endswith("(stopped then: --stop-over-budget)")
    assert scale.timed_out_detail("train", PROGRESS_LOG) == (
        "timed out at train (epoch 1: step 200/1,000 after 120 s, 1.67 steps/s: 8 min of the epoch to go)")
    assert scale.timed_out_detail("encode", PROGRESS_LOG) == "timed out at encode"
    assert scale.timed_out_detail(None, PROGRESS_LOG) == "timed out"
