"""benchmarks/valid_curves.py: curves with and without the average of the best checks read as one table."""

from __future__ import annotations

import polars as pl


def write(results, model: str, rows: list[dict]) -> None:
    folder = results / "runs" / "icecat" / model / "pretrained" / "seed0"
    folder.mkdir(parents=True)
    pl.DataFrame(rows).write_csv(folder / "valid_curve.csv")


def test_averages_are_told_apart_from_the_checks_and_left_out_of_the_mean_curves(load_benchmark, tmp_path):
    curves_script = load_benchmark("valid_curves")
    write(tmp_path, "plain", [{"fold": 0, "epoch": e, "ndcg@10": v} for e, v in [(0, 0.5), (1, 0.6), (2, 0.7)]])
    write(tmp_path, "averaged", [{"fold": 0, "epoch": e, "ndcg@10": v, "averaged": a}
                                 for e, v, a in [(0, 0.5, 0), (1, 0.6, 1), (2, 0.7, 1), (2, 0.9, 2)]])
    curves = curves_script.read_curves(tmp_path, "icecat")
    assert curves.sort("model", "epoch", "averaged")["averaged"].to_list() == [0, 1, 1, 2, 0, 1, 1]
    means = curves_script.mean_curves(curves_script.checks_only(curves), ["ndcg@10"])
    assert means.filter(pl.col("model") == "averaged")["ndcg@10"].to_list() == [0.5, 0.6, 0.7]
    assert curves_script.plot(curves, "ndcg@10", "icecat", tmp_path).exists()
