"""How much personalised recall a perfect knowledge of the user's taste could add to a saved simshop run.

MGDSPR's claim (personalisation lifts p_recall@100 by >= 10%) can only hold if the data leaves that much room.
This script takes a saved run of a model that ignores the user (its top 500 per test search), adds
``weight x affinity(user, item)`` to the (per-search standardised) scores, with the generator's own latent
affinity (favourite colours and print style for visual users, brand and price tier for textual ones, weighed by
``visual_reliance``: the same rule that drives simshop's clicks and orders), re-ranks, and prints p_recall@100
and ndcg@10 for each weight. No model can know the taste better than this oracle; it can only re-order the
500 items the run found, so its gain is an estimate of the headroom, not a bound.

    python benchmarks/personalisation_headroom.py results/runs/simshop/light_two_tower/pretrained/seed0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.evaluation import evaluate_run
from retrieval_zoo.significance import load_saved_run, targets_for

WEIGHTS = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]


def taste_tables(dataset) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each search with its user's latent taste, and each product with the attributes that taste is about."""
    users = dataset.users.select("user_id", "visual_reliance", "favourite_colors", "favourite_styles",
                                 "favourite_brands", pl.col("price_tier").alias("user_tier"))
    products = dataset.products.select("product_id", "latent_color", "latent_style", "brand", "price_tier")
    return dataset.searches.select("search_id", "user_id").join(users, on="user_id"), products


def rerank(run: pl.DataFrame, searches: pl.DataFrame, products: pl.DataFrame, weight: float) -> pl.DataFrame:
    """The run re-scored as standardised score + weight x affinity, affinity in [0, 1] as simshop's _affinity."""
    scored = (run.join(searches, left_on="q_id", right_on="search_id").join(products, left_on="doc_id",
                                                                             right_on="product_id"))
    visual = (0.5 * pl.col("favourite_colors").list.contains(pl.col("latent_color")).cast(pl.Float64)
              + 0.5 * pl.col("favourite_styles").list.contains(pl.col("latent_style")).cast(pl.Float64))
    textual = (0.6 * pl.col("favourite_brands").list.contains(pl.col("brand")).cast(pl.Float64)
               + 0.4 * (pl.col("price_tier") == pl.col("user_tier")).cast(pl.Float64))
    affinity = pl.col("visual_reliance") * visual + (1 - pl.col("visual_reliance")) * textual
    standardised = (pl.col("score") - pl.col("score").mean().over("q_id")) / pl.col("score").std().over("q_id")
    return scored.select("q_id", "doc_id", (standardised.fill_nan(0.0) + weight * affinity).alias("score"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a saved simshop run folder (run.parquet, units.parquet)")
    parser.add_argument("--dataset", default="simshop")
    args = parser.parse_args()
    saved = load_saved_run(args.run_dir)
    if saved is None:
        raise SystemExit(f"error: no run.parquet in {args.run_dir}; run `make bench` for that model first")
    dataset = load_dataset(args.dataset)
    targets = targets_for(dataset, saved.units)
    searches, products = taste_tables(dataset)
    base = None
    print(f"{args.run_dir} on {args.dataset}: oracle taste re-ranking of its top {saved.run.height // saved.units.height}")
    print(f"{'weight':>6} {'p_recall@100':>13} {'change':>8} {'ndcg@10':>8}")
    for weight in WEIGHTS:
        means, _ = evaluate_run(targets, rerank(saved.run, searches, products, weight), ["p_recall@100", "ndcg@10"])
        base = base or means["p_recall@100"]
        print(f"{weight:6.2f} {means['p_recall@100']:13.4f} {means['p_recall@100'] / base - 1:+8.1%} "
              f"{means['ndcg@10']:8.4f}")


if __name__ == "__main__":
    main()
