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
         "--data", str(tmp_path / "data"), "--ann", "HNSW32", "IVF16,Flat"],
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
    assert rows["light_two_tower/default"]["one_epoch"] == "True"  # one epoch where the config says more
    # minilm_zeroshot encodes the MiniLM vectors (cold); mgdspr/pretrained reads them back
    assert rows["minilm_zeroshot/default"]["encoded_features"] == "True"
    assert rows["mgdspr/pretrained"]["encoded_features"] == "False"
    report = (out / "scale.md").read_text()
    assert "read them back (warm)" in report and "GPU: not measured" in report
    indexes = {row["index"]: row for row in csv.DictReader((out / "ann.csv").open())}
    assert set(indexes) == {"Flat", "HNSW32", "IVF16,Flat"}
    assert float(indexes["Flat"]["overlap@100"]) == 1.0
    assert 0.5 < float(indexes["HNSW32"]["overlap@100"]) <= 1.0
