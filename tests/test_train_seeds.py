"""benchmarks/train_seeds.py: each row's spread over training seeds against its spread over fold seeds, the
registered rule's verdict, and adopting the measured seeds onto a board as one store commit."""

from __future__ import annotations

import json
import statistics

import polars as pl
import pytest

from retrieval_zoo.reports import RECIPE, read_leaderboard, write_board


def board_row(model: str, seed: int, ndcg: float, recall: float, config_hash: str = "aaaaaaaaaaaa",
              dataset: str = "icecat") -> dict:
    return {"dataset": dataset, "model": model, "variant": "pretrained", "seed": seed, "baseline": False,
            "ndcg@10": ndcg, "recall@100": recall, "config_hash": config_hash, "recipe": RECIPE,
            "run_dir": f"runs/{dataset}/{model}/pretrained/seed{seed}"}


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema_overrides={"config_hash": pl.Utf8})


def test_seed_spread_is_divided_by_the_fold_seed_spread_and_only_same_recipe_seeds_count(load_benchmark):
    seeds = load_benchmark("train_seeds")
    board = frame([board_row("m", 0, 0.60, 0.80), board_row("other", 0, 0.5, 0.7)])
    probe = frame([board_row("m", 1, 0.62, 0.82), board_row("m", 2, 0.64, 0.84),
                   board_row("other", 1, 0.5, 0.7, config_hash="bbbbbbbbbbbb"),  # another recipe: not a seed
                   board_row("m", 1, 0.1, 0.1, dataset="simshop")])
    means = seeds.seed_means(board, probe, [1, 2])
    assert means["other/pretrained"] == {0: {"ndcg@10": 0.5, "recall@100": 0.7}}
    fold_sd = seeds.fold_seed_sd(pl.DataFrame({
        "model": ["m/pretrained", "m/pretrained"], "metric": ["ndcg@10", "recall@100"],
        "fold seed 0": [0.60, 0.80], "fold seed 1": [0.64, 0.80], "fold seed 2": [0.68, 0.88]}))
    rows = seeds.report_rows(means, fold_sd, [1, 2])
    assert [row["row"] for row in rows] == ["m/pretrained", "m/pretrained"]  # "other" lacks seeds 1, 2
    ndcg = rows[0]
    assert ndcg["sd over seeds"] == pytest.approx(0.02)
    assert ndcg["sd over fold seeds"] == pytest.approx(0.04)
    assert ndcg["ratio"] == pytest.approx(0.5)
    assert rows[1]["ratio"] == pytest.approx(0.02 / statistics.stdev([0.80, 0.80, 0.88]))


def test_the_rule_moves_the_board_only_at_the_registered_median(load_benchmark):
    seeds = load_benchmark("train_seeds")
    rows = [{"ratio": r} for r in (0.2, 0.4, 0.6, 0.9)] + [{"ratio": None}]
    assert seeds.verdict(rows, 0.5)[0] == pytest.approx(0.5)
    assert "moves to every measured seed" in seeds.verdict(rows, 0.5)[1]
    assert "one seed stands" in seeds.verdict(rows, 0.51)[1]
    assert seeds.verdict([{"ratio": None}], 0.5) == (None, "no row is measured both ways: nothing to decide")


def test_adopt_copies_the_seeds_runs_and_rows_onto_the_board_and_leaves_the_probe(load_benchmark, tmp_path):
    seeds = load_benchmark("train_seeds")
    board_dir, probe_dir = tmp_path / "board", tmp_path / "probe"
    write_board(board_dir, [board_row("m", 0, 0.6, 0.8)], {"icecat": "old text"})
    write_board(probe_dir, [board_row("m", 1, 0.62, 0.82), board_row("m", 2, 0.64, 0.84)],
                {"icecat": "protocol"})
    for seed in (1, 2):
        folder = probe_dir / "runs" / "icecat" / "m" / "pretrained" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"seed": seed}))
    adopted = seeds.adopt(probe_dir, board_dir, [1, 2])
    assert adopted == ["runs/icecat/m/pretrained/seed1", "runs/icecat/m/pretrained/seed2"]
    board = read_leaderboard(board_dir).sort("seed")
    assert board["seed"].cast(pl.Int64).to_list() == [0, 1, 2]
    assert board["ndcg@10"].cast(pl.Float64).to_list() == pytest.approx([0.6, 0.62, 0.64])
    assert json.loads((board_dir / adopted[1] / "metrics.json").read_text()) == {"seed": 2}
    assert (probe_dir / adopted[1] / "metrics.json").exists()  # linked or copied, not moved
    assert not (board_dir / "runs" / ".staging").exists() or not any((board_dir / "runs" / ".staging").iterdir())
    with pytest.raises(SystemExit, match="holds no icecat runs of seeds \\[3\\]"):
        seeds.adopt(probe_dir, board_dir, [3])
