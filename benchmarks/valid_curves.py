"""Valid curves: the retrieval metric on valid before training (epoch 0) and after each epoch, per model.

Reads every run folder's ``valid_curve.csv`` (written by the runner when model selection is on) under
``results/runs/<dataset>/`` and draws one panel per model/variant: each fold's (and seed's) curve as its gain
over its own untrained start (epoch 0). Writes ``<out>/valid_curves_<dataset>.png`` and prints the mean curves
(over the folds and seeds that reached each epoch). Runs made with ``validation.average_top_k`` > 1 also hold the
average of their best checks (a row with ``averaged`` >= 2): it is drawn as a star at its epoch, apart from the
curves, and left out of the mean curves.

    python benchmarks/valid_curves.py --dataset icecat --out docs/models
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl


def read_curves(results: Path, dataset: str) -> pl.DataFrame:
    """Every run's valid curve: model, variant, seed, fold, epoch and the metric columns."""
    frames = []
    for path in sorted((results / "runs" / dataset).glob("*/*/seed*/valid_curve.csv")):
        seed_dir = path.parent
        curve = pl.read_csv(path).with_columns(
            pl.lit(seed_dir.parent.parent.name).alias("model"), pl.lit(seed_dir.parent.name).alias("variant"),
            pl.lit(int(seed_dir.name.removeprefix("seed"))).alias("seed"))
        frames.append(curve)
    if not frames:
        raise SystemExit(f"error: no valid_curve.csv under {results / 'runs' / dataset}; run the models first")
    curves = pl.concat(frames, how="diagonal_relaxed")
    checked = (pl.col("epoch") > 0).cast(pl.Int64)  # curves made without averaging: the start 0, each check 1
    averaged = pl.col("averaged").fill_null(checked) if "averaged" in curves.columns else checked
    return curves.with_columns(averaged.alias("averaged"))


def checks_only(curves: pl.DataFrame) -> pl.DataFrame:
    """The start and the epochs' checks, without the averages of checks."""
    return curves.filter(pl.col("averaged") <= 1)


def mean_curves(curves: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    """Mean over folds and seeds per (model, variant, epoch); ``runs`` counts the curves that reached it."""
    return (curves.group_by("model", "variant", "epoch")
            .agg(*[pl.col(m).mean() for m in metrics], pl.len().alias("runs"))
            .sort("model", "variant", "epoch"))


def plot(curves: pl.DataFrame, metric: str, dataset: str, out: Path) -> Path:
    """One panel per model/variant: each fold's (and seed's) valid curve as its gain over its own start (epoch 0),
    so folds of different difficulty and length share one axis; the selected epochs are the curves' maxima."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = curves.with_columns(
        (pl.col(metric) - pl.col(metric).filter(pl.col("epoch") == 0).first()
         .over("model", "variant", "seed", "fold")).alias("gain"))
    averages, gains = gains.filter(pl.col("averaged") >= 2), checks_only(gains)
    panels = gains.select("model", "variant").unique(maintain_order=True).sort("model", "variant").rows()
    columns = 4
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False, sharey=True)
    for axis, (model, variant) in zip(axes.flat, panels, strict=False):
        part = gains.filter((pl.col("model") == model) & (pl.col("variant") == variant))
        for _, run in part.group_by(["seed", "fold"], maintain_order=True):
            axis.plot(run["epoch"], run["gain"], marker="o", markersize=3, alpha=0.7)
        averaged = averages.filter((pl.col("model") == model) & (pl.col("variant") == variant))
        if averaged.height:
            axis.scatter(averaged["epoch"], averaged["gain"], marker="*", s=60, color="black", zorder=3,
                         label="average of the best checks")
            axis.legend(fontsize=7, loc="lower right")
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_title(f"{model}/{variant}", fontsize=10)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel(f"valid {metric} - start")
    for axis in axes[-1]:
        axis.set_xlabel("epoch (0 = untrained start)")
    fig.suptitle(f"{dataset}: valid {metric} gain over each run's start, one line per fold/seed")
    fig.tight_layout()
    path = out / f"valid_curves_{dataset}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="icecat")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=Path("docs/models"))
    parser.add_argument("--metric", default="ndcg@10", help="the metric plotted (the table shows them all)")
    args = parser.parse_args()
    curves = read_curves(args.results, args.dataset)
    metrics = [c for c in curves.columns if "@" in c]
    means = mean_curves(checks_only(curves), metrics)
    with pl.Config(tbl_rows=200, tbl_cols=20):
        print(means)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {plot(curves, args.metric, args.dataset, args.out)}")


if __name__ == "__main__":
    main()
