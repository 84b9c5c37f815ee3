"""The command line: listings, and one clear line for bad input."""

from __future__ import annotations

import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrieval_zoo", *args], capture_output=True, text=True, timeout=300)


def test_list_shows_models_variants_and_datasets():
    done = _cli("list")
    assert done.returncode == 0, done.stderr
    assert "light_two_tower" in done.stdout and "variants: default, pretrained" in done.stdout
    assert "simshop-tiny" in done.stdout


def test_unknown_model_is_one_clear_line(tmp_path):
    done = _cli("bench", "--model", "nope", "--results", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nope'; valid models: ")


def test_unknown_dataset_and_config_key_are_one_clear_line(tmp_path):
    done = _cli("bench", "--model", "bm25", "--dataset", "nosuch", "--results", str(tmp_path))
    assert done.returncode == 2 and "valid datasets: " in done.stderr
    done = _cli("bench", "--model", "bm25", "--set", "model.k3=1", "--results", str(tmp_path))
    assert done.returncode == 2 and "unknown config key 'model.k3'" in done.stderr
    assert not (tmp_path / "leaderboard.csv").exists()
