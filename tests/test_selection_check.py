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


def test_where_the_run_averaged_its_best_checks_the_average_is_weighed_against_the_start(load_benchmark):
    """validation.average_top_k: the average's row (averaged >= 2) stands for training even where a single check
    scored higher; a fold with one check only (no average row) keeps the runner's best-check rule."""
    check = load_benchmark("selection_check")
    rows = [
        (0, 0, 0.50, 0.90, 0), (0, 1, 0.70, 0.90, 1), (0, 2, 0.65, 0.91, 1), (0, 2, 0.60, 0.93, 2),
        (1, 0, 0.50, 0.90, 0), (1, 1, 0.55, 0.92, 1), (1, 2, 0.52, 0.92, 1), (1, 2, 0.45, 0.99, 2),
        (2, 0, 0.50, 0.90, 0), (2, 1, 0.55, 0.80, 1),
    ]
    states = check.selected_states(pl.DataFrame(
        [{"fold": f, "epoch": e, "ndcg@10": n, "recall@100": r, "averaged": a} for f, e, n, r, a in rows]))
    assert states["kept ndcg@10"].to_list() == [0.60, 0.50, 0.55]  # the average, the start, the one check
    assert states["averaged"].to_list() == [2, 0, 1]
    assert states["kept_epoch"].to_list() == [2, 0, 1]
