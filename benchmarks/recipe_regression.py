"""Issue 19's simshop check: no row's NDCG@10 under the current recipe drops by more than 0.005 against the board
before the recipe changed (its git commit), each row a mean over its seeds.

Rows still made under an earlier recipe (the board marks them †) are listed as "not rerun": they compare the old
board with itself. Writes ``results/recipe_regression.md`` and exits non-zero when a rerun row dropped too far.

    python benchmarks/recipe_regression.py                      # against the board before commit 6114118
    python benchmarks/recipe_regression.py --against <commit>
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import polars as pl

from retrieval_zoo import atomic_files
from retrieval_zoo.reports import RECIPE

REPO = Path(__file__).resolve().parents[1]
BOARD = "results/leaderboard.csv"
RECIPE_COMMIT = "6114118"  # the commit that brought in the 2026-12-04 recipe: the board before it is the baseline
TOLERANCE = 0.005
KEY = ["dataset", "model", "variant"]


def board_at(commit: str) -> pl.DataFrame:
    text = subprocess.run(["git", "show", f"{commit}:{BOARD}"], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout
    return pl.read_csv(io.StringIO(text), infer_schema_length=0)


def row_means(board: pl.DataFrame) -> pl.DataFrame:
    recipe = pl.col("recipe") if "recipe" in board.columns else pl.lit(None, pl.Utf8)
    return (board.filter(pl.col("dataset").str.starts_with("simshop"))
            .group_by(KEY).agg(pl.col("ndcg@10").cast(pl.Float64).mean().alias("ndcg@10"),
                               _mean_or_null(board, "p_recall@100"), pl.len().alias("seeds"),
                               (recipe.fill_null("") == RECIPE).all().alias("current")))


def _mean_or_null(board: pl.DataFrame, metric: str) -> pl.Expr:
    """The personalised recall (behaviour data only) beside the headline metric, for the cards' claims."""
    value = pl.col(metric).cast(pl.Float64) if metric in board.columns else pl.lit(None, pl.Float64)
    return value.mean().alias(metric)


def compare(before: pl.DataFrame, now: pl.DataFrame) -> pl.DataFrame:
    joined = now.join(before.select(*KEY, pl.col("ndcg@10").alias("before"),
                                    pl.col("p_recall@100").alias("p_recall@100 before")), on=KEY, how="left")
    change = pl.col("ndcg@10") - pl.col("before")
    return joined.with_columns(change.alias("change")).with_columns(
        pl.when(~pl.col("current")).then(pl.lit("not rerun"))
        .when(pl.col("before").is_null()).then(pl.lit("new row"))
        .when(pl.col("change") < -TOLERANCE).then(pl.lit("DROPPED"))
        .otherwise(pl.lit("ok")).alias("verdict")).sort(KEY)


def markdown(table: pl.DataFrame, against: str) -> str:
    lines = [f"# simshop rows under the {RECIPE} recipe vs the board before commit {against}", "",
             f"Mean NDCG@10 over seeds; a rerun row fails when it drops by more than {TOLERANCE}. "
             "Made by `python benchmarks/recipe_regression.py`.", "",
             "| dataset | model/variant | seeds | before | now | change | verdict | p_recall@100 before | now |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table.iter_rows(named=True):
        before = "–" if row["before"] is None else f"{row['before']:.4f}"
        change = "–" if row["change"] is None or not row["current"] else f"{row['change']:+.4f}"
        now = f"{row['ndcg@10']:.4f}" if row["current"] else "(old recipe)"
        personal = [_number(row["p_recall@100 before"]), _number(row["p_recall@100"]) if row["current"] else "–"]
        lines.append(f"| {row['dataset']} | {row['model']}/{row['variant']} | {row['seeds']} | {before} | {now} | "
                     f"{change} | {row['verdict']} | {personal[0]} | {personal[1]} |")
    counts = table["verdict"].value_counts().sort("verdict")
    lines += ["", "Verdicts: " + ", ".join(f"{v} {n}" for v, n in counts.iter_rows()) + "."]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default=f"{RECIPE_COMMIT}^", help="git commit of the baseline board")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "recipe_regression.md")
    args = parser.parse_args()
    now = pl.read_csv(REPO / BOARD, infer_schema_length=0)
    table = compare(row_means(board_at(args.against)), row_means(now))
    text = markdown(table, args.against)
    atomic_files.write_text(args.out, text)
    print(text)
    if (table["verdict"] == "DROPPED").any():
        sys.exit("a rerun simshop row dropped by more than the tolerance (see the table)")


if __name__ == "__main__":
    main()
