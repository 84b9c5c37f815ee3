"""benchmarks/selection_check.py: the state selection kept per fold, as the runner keeps it, from saved curves."""

from __future__ import annotations

import polars as pl


def curve(points: dict[int, list[tuple[float, float]]]) -> pl.DataFrame:
    return pl.DataFrame([{"epoch": epoch, "ndcg@10": n, "recall@100": r, "fold": fold}
                         for fold, rows in points.items() for epoch, (n, r) in enumerate(rows)])


def test_the_kept_state_is_the_first_best_trained_epoch_or_the_start(load_benchmark):
    check = load_benchmark("selection_check")
    states = check.selected_states(curve({
        0: [(0.50, 0.90), (0.55, 0.85), (0.60, 0.80), (0.60, 0.95)],  # first maximum: epoch 2, recall lost
        1: [(0.70, 0.90), (0.70, 0.99), (0.65, 0.99)],                # a tie with the start keeps the start
    }))
    assert states["kept_epoch"].to_list() == [2, 0]
    assert states["kept recall@100"].to_list() == [0.80, 0.90]
    assert states["start ndcg@10"].to_list() == [0.50, 0.70] and states["epochs"].to_list() == [3, 2]
