"""benchmarks/checkpoint_average.py: the kept states read from the curves, the training check, the rule."""

from __future__ import annotations

import polars as pl


def write_curve(folder, rows: list[tuple]):
    folder.mkdir(parents=True)
    columns = ["fold", "epoch", "ndcg@10", "recall@100", "averaged"][:len(rows[0])]
    pl.DataFrame([dict(zip(columns, row, strict=True)) for row in rows]).write_csv(folder / "valid_curve.csv")
    return folder


def test_the_kept_state_counts_the_folds_that_kept_the_average(load_benchmark, tmp_path):
    probe = load_benchmark("checkpoint_average")
    folder = write_curve(tmp_path / "run", [
        (0, 0, 0.50, 0.80, 0), (0, 1, 0.60, 0.82, 1), (0, 2, 0.70, 0.84, 1), (0, 2, 0.65, 0.90, 2),
        (1, 0, 0.50, 0.80, 0), (1, 1, 0.60, 0.82, 1), (1, 2, 0.55, 0.84, 1), (1, 2, 0.40, 0.90, 2),
    ])
    kept = probe.kept_on_valid(folder)
    assert kept["folds averaged"] == 1  # fold 1's average is below the start: the start is kept
    assert kept["ndcg@10"] == (0.65 + 0.50) / 2 and kept["recall@100"] == (0.90 + 0.80) / 2
    assert probe.kept_on_valid(tmp_path / "missing") is None


def test_the_same_training_is_the_board_runs_checks_exactly(load_benchmark, tmp_path):
    probe = load_benchmark("checkpoint_average")
    made = write_curve(tmp_path / "probe", [(0, 0, 0.5, 0.8, 0), (0, 1, 0.6, 0.9, 1), (0, 2, 0.7, 0.9, 1),
                                            (0, 2, 0.65, 0.95, 2)])
    board = write_curve(tmp_path / "board", [(0, 0, 0.5, 0.8), (0, 1, 0.6, 0.9), (0, 2, 0.7, 0.9)])
    other = write_curve(tmp_path / "other", [(0, 0, 0.5, 0.8), (0, 1, 0.6, 0.9), (0, 2, 0.7001, 0.9)])
    assert probe.same_trajectory(made, board) is True
    assert probe.same_trajectory(made, other) is False
    assert probe.same_trajectory(made, tmp_path / "missing") is None


def test_the_rule_needs_a_mean_valid_ndcg_above_the_registered_board_and_no_lower_recall(load_benchmark):
    probe = load_benchmark("checkpoint_average")
    board = probe.REGISTERED_BOARD

    def row(ndcg_change: float, recall_change: float) -> dict:
        return {"probe valid ndcg@10": board["ndcg@10"] + ndcg_change,
                "probe valid recall@100": board["recall@100"] + recall_change}

    assert probe.verdict([row(0.02, 0.0), row(-0.01, 0.001)], 2).startswith("adopted")
    assert probe.verdict([row(0.02, -0.002), row(-0.01, 0.001)], 2).startswith("rejected")
    assert probe.verdict([row(0.0, 0.01)], 1).startswith("rejected")  # equal is not a rise
    assert probe.verdict([row(0.1, 0.1)], 2) == "1 of 2 runs made: no verdict yet"
