"""benchmarks/train_seeds.py: each row's spread over training seeds against its spread over fold seeds, the
registered rule's verdict, and adopting the measured seeds onto a board as one store commit."""

from __future__ import annotations

import statistics

import polars as pl
import pytest

from retrieval_zoo.reports import RECIPE


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
