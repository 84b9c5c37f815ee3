"""The leaderboard plots (retrieval_zoo/plots.py): written per dataset, zoomed to the data, byte-identical for an
identical board, and skipped (without error) where a dataset has no groups or no costs."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_zoo import plots
from retrieval_zoo.reports import RECIPE, write_markdown


def board() -> pl.DataFrame:
    """Two datasets: ``shop`` with everything (3 models x 2 seeds, NDCG@10 in [0.8, 0.95], costs, groups),
    ``bare`` with headline metrics only."""
    rows = []
    for i, (model, variant, baseline) in enumerate([("bm25", "default", "true"), ("tower", "default", "false"),
                                                    ("tower", "big", "false")]):
        for seed in range(2):
            quality = 0.82 + 0.05 * i + 0.01 * seed
            rows.append({"dataset": "shop", "model": model, "variant": variant, "seed": str(seed),
                         "baseline": baseline, "ndcg@10": str(quality), "recall@100": str(quality - 0.2),
                         "recall@10": str(quality - 0.6), "recall@500": str(quality + 0.04),
                         "train_seconds": str(0.0 if baseline == "true" else 10.0 * (i + 1) + seed),
                         "query_latency_ms": str(0.5 + 0.1 * i),
                         "recall@100[group=broad]": str(quality - 0.3),
                         "recall@100[group=colour]": str(quality - 0.1), "recipe": RECIPE})
    for model in ("bm25", "tower"):
        rows.append({"dataset": "bare", "model": model, "variant": "default", "seed": "0",
                     "baseline": str(model == "bm25").lower(), "ndcg@10": "0.9" if model == "bm25" else "0.85",
                     "recipe": RECIPE})
    return pl.DataFrame(rows).cast(pl.Utf8)


def test_every_plot_of_a_dataset_is_written_and_linked_under_its_heading(tmp_path):
    made = plots.dataset_plots(board(), "shop", tmp_path)
    names = [path.name for _, path in made]
    assert names == ["leaderboard_shop.png", "pareto_shop.png", "groups_shop.png", "recall_at_k_shop.png"]
    for name in names:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    text = write_markdown(tmp_path, board())
    shop = text[text.index("## shop"):]
    for name in names:
        assert f"({name})" in shop
    assert not list(tmp_path.glob("*.tmp.png"))


def test_the_leaderboard_axis_is_zoomed_to_the_data_not_from_zero():
    table = plots.summarise(board().filter(pl.col("dataset") == "shop"))
    assert table["label"].to_list() == ["tower/big", "tower", "bm25"]  # sorted by NDCG@10, best first
    figure = plots.render_leaderboard(table, "shop")
    low, high = figure.axes[0].get_xlim()  # the NDCG@10 panel: every value in [0.82, 0.93]
    assert 0.7 < low < 0.82 and 0.93 < high < 1.0
    assert plots.render_groups(table, "shop").axes[0].get_xlim()[0] > 0.4  # broad: values in [0.52, 0.63]


def test_rows_far_below_the_rest_do_not_squash_the_axis():
    values = np.array([0.68, 0.63, 0.62, 0.6, 0.13, 0.002])
    assert plots.low_outlier_cut(values) == 0.6
    assert plots.low_outlier_cut(np.array([0.66, 0.658, 0.641])) == -np.inf  # close values all stay


def test_the_pareto_front_is_the_rows_nothing_cheaper_beats():
    costs = np.array([0.0, 10.0, 20.0, 5.0, 30.0])
    quality = np.array([0.8, 0.9, 0.85, 0.7, 0.95])
    assert plots.pareto_front(costs, quality).tolist() == [0, 1, 4]


def test_two_calls_give_identical_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        plots.dataset_plots(board(), "shop", folder)
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
    for path in first.iterdir():
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name
    # a rerun over unchanged rows keeps the files (not even rewritten); changed rows redraw them
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    plots.dataset_plots(board(), "shop", first)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    before = (first / "leaderboard_shop.png").read_bytes()
    changed = board().with_columns(pl.when(pl.col("model") == "bm25").then(pl.lit("0.85"))
                                   .otherwise(pl.col("ndcg@10")).alias("ndcg@10"))
    plots.dataset_plots(changed, "shop", first)
    assert (first / "leaderboard_shop.png").read_bytes() != before


def test_a_dataset_without_groups_or_costs_skips_those_plots(tmp_path):
    (tmp_path / "groups_bare.png").write_bytes(b"stale")  # from an earlier board that had groups
    made = plots.dataset_plots(board(), "bare", tmp_path)
    assert [path.name for _, path in made] == ["leaderboard_bare.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard_bare.png"]
    text = write_markdown(tmp_path, board())
    bare = text[text.index("## bare"):text.index("## shop")]
    assert "(leaderboard_bare.png)" in bare and "pareto_bare" not in bare and "groups_bare" not in bare


def test_untrained_rows_only_get_the_latency_panel_alone(tmp_path):
    rows = board().filter((pl.col("dataset") == "shop") & (pl.col("model") == "bm25"))  # train_seconds 0
    table = plots.summarise(rows)
    figure = plots.render_pareto(table, "shop")
    assert len([axis for axis in figure.axes if axis.get_xscale() == "log"]) == 1
    assert "pareto_shop.png" in [path.name for _, path in plots.dataset_plots(rows, "shop", tmp_path)]
