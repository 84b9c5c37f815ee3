"""How much personalised recall knowing the user's taste could add to a saved simshop run.

MGDSPR's claim (personalisation lifts p_recall@100 by >= 10%) can only hold if the data leaves that much room.
This script takes a saved run of a model that ignores the user (its top 500 per test search), adds
``weight x affinity(user, item)`` to the (per-search standardised) scores, re-ranks, and prints p_recall@100
and ndcg@10 for each weight. The affinity comes from one of two estimates:

- ``--estimate oracle`` (default): the generator's own latent taste (favourite colours and print style for
  visual users, brand and price tier for textual ones, weighed by ``visual_reliance``: the rule that drives
  simshop's clicks and orders). No model can know the taste better; it can only re-order the items the run
  found, so its gain estimates the headroom, it does not bound it.
- ``--estimate history``: what a model can read from the user's own log: for each attribute in
  ``--attributes``, the share of the user's earlier clicks, collects and orders (before this search) whose item
  has the candidate's value, averaged over the attributes. The default attributes are those the text shows
  (brand, price tier, and colour and style where the listing names them); ``latent_color,latent_style`` are
  the colour and style every image shows, i.e. what a model that reads the history items' images could use.

    python benchmarks/personalisation_headroom.py results/runs/simshop/light_two_tower/pretrained/seed0
    python benchmarks/personalisation_headroom.py results/runs/simshop/bm25/default/seed0 --estimate history
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.evaluation import evaluate_run
from retrieval_zoo.significance import load_saved_run, targets_for

WEIGHTS = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
HISTORY_ACTIONS = ["click", "collect", "order"]
TEXT_ATTRIBUTES = "brand,price_tier,color,style"
PRODUCT_ATTRIBUTES = {"brand", "price_tier", "color", "style", "latent_color", "latent_style", "product_type",
                      "material", "shop_id"}


def oracle_affinity(run: pl.DataFrame, dataset) -> pl.DataFrame:
    """(q_id, doc_id, affinity): the generator's latent affinity in [0, 1], as simshop's ``_affinity``."""
    users = dataset.users.select("user_id", "visual_reliance", "favourite_colors", "favourite_styles",
                                 "favourite_brands", pl.col("price_tier").alias("user_tier"))
    searches = dataset.searches.select(pl.col("search_id").alias("q_id"), "user_id").join(users, on="user_id")
    products = dataset.products.select(pl.col("product_id").alias("doc_id"), "latent_color", "latent_style",
                                       "brand", "price_tier")
    scored = run.select("q_id", "doc_id").join(searches, on="q_id").join(products, on="doc_id")
    visual = (0.5 * pl.col("favourite_colors").list.contains(pl.col("latent_color")).cast(pl.Float64)
              + 0.5 * pl.col("favourite_styles").list.contains(pl.col("latent_style")).cast(pl.Float64))
    textual = (0.6 * pl.col("favourite_brands").list.contains(pl.col("brand")).cast(pl.Float64)
               + 0.4 * (pl.col("price_tier") == pl.col("user_tier")).cast(pl.Float64))
    affinity = pl.col("visual_reliance") * visual + (1 - pl.col("visual_reliance")) * textual
    return scored.select("q_id", "doc_id", affinity.alias("affinity"))


def history_affinity(run: pl.DataFrame, dataset, attributes: list[str]) -> pl.DataFrame:
    """(q_id, doc_id, affinity): per attribute, the share of the user's engagements before the search whose
    item shares the candidate's value (a missing value never matches), averaged over ``attributes``; 0 for a
    user without history."""
    products = dataset.products.select("product_id", *attributes)
    searches = (dataset.searches.select(pl.col("search_id").alias("q_id"), "user_id",
                                        pl.col("timestamp").alias("search_time"))
                .join(run.select("q_id").unique(), on="q_id"))
    engaged = dataset.interactions.filter(pl.col("action").is_in(HISTORY_ACTIONS))
    history = (searches.join(engaged.select("user_id", "product_id", "timestamp", "search_id"), on="user_id")
               .filter((pl.col("timestamp") < pl.col("search_time")) & (pl.col("search_id") != pl.col("q_id")))
               .join(products, on="product_id"))
    candidates = run.select("q_id", "doc_id").join(products.rename({"product_id": "doc_id"}), on="doc_id",
                                                   how="left")
    candidates = candidates.join(history.group_by("q_id").len("history_size"), on="q_id", how="left")
    for name in attributes:
        counts = history.drop_nulls(name).group_by("q_id", name).len(f"matches_{name}")
        candidates = candidates.join(counts, on=["q_id", name], how="left")
    matches = pl.mean_horizontal(pl.col(f"matches_{name}").fill_null(0) for name in attributes)
    affinity = (matches / pl.col("history_size")).fill_null(0.0)
    return candidates.select("q_id", "doc_id", affinity.alias("affinity"))


def with_affinity(run: pl.DataFrame, affinity: pl.DataFrame) -> pl.DataFrame:
    """The run with its per-search standardised score and each item's affinity (0 where none is known)."""
    standardised = (pl.col("score") - pl.col("score").mean().over("q_id")) / pl.col("score").std().over("q_id")
    return run.join(affinity, on=["q_id", "doc_id"], how="left").select(
        "q_id", "doc_id", standardised.fill_nan(0.0).alias("standardised"), pl.col("affinity").fill_null(0.0))


def rerank(scored: pl.DataFrame, weight: float) -> pl.DataFrame:
    """A ``with_affinity`` frame re-scored as standardised score + weight x affinity."""
    return scored.select("q_id", "doc_id", (pl.col("standardised") + weight * pl.col("affinity")).alias("score"))


def parse_attributes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - PRODUCT_ATTRIBUTES)
    if not names or unknown:
        raise SystemExit(f"error: unknown attribute(s) {unknown or text!r}; choose from {sorted(PRODUCT_ATTRIBUTES)}")
    return names


def headroom_table(run: pl.DataFrame, targets, affinity: pl.DataFrame) -> pl.DataFrame:
    """p_recall@100 and ndcg@10 of the re-ranked run per weight, and the p_recall change against weight 0."""
    scored = with_affinity(run, affinity)
    rows = []
    for weight in WEIGHTS:
        means, _ = evaluate_run(targets, rerank(scored, weight), ["p_recall@100", "ndcg@10"])
        rows.append({"weight": weight, "p_recall@100": means["p_recall@100"], "ndcg@10": means["ndcg@10"]})
    table = pl.DataFrame(rows)
    return table.with_columns((pl.col("p_recall@100") / table["p_recall@100"][0] - 1).alias("change"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a saved simshop run folder (run.parquet, units.parquet)")
    parser.add_argument("--dataset", default="simshop")
    parser.add_argument("--estimate", choices=["oracle", "history"], default="oracle")
    parser.add_argument("--attributes", default=TEXT_ATTRIBUTES,
                        help=f"product columns the history estimate compares (default {TEXT_ATTRIBUTES})")
    args = parser.parse_args()
    attributes = parse_attributes(args.attributes)
    saved = load_saved_run(args.run_dir)
    if saved is None:
        raise SystemExit(f"error: no run.parquet in {args.run_dir}; run `make bench` for that model first")
    dataset = load_dataset(args.dataset)
    if not dataset.has_behaviour:
        raise SystemExit(f"error: {args.dataset} has no users or behaviour; use a simshop dataset")
    if args.estimate == "oracle":
        affinity, label = oracle_affinity(saved.run, dataset), "oracle (latent) taste"
    else:
        affinity, label = history_affinity(saved.run, dataset, attributes), f"taste from history ({', '.join(attributes)})"
    table = headroom_table(saved.run, targets_for(dataset, saved.units), affinity)
    print(f"{args.run_dir} on {args.dataset}: {label} re-ranking of its top {saved.run.height // saved.units.height}")
    print(f"{'weight':>6} {'p_recall@100':>13} {'change':>8} {'ndcg@10':>8}")
    for row in table.iter_rows(named=True):
        print(f"{row['weight']:6.2f} {row['p_recall@100']:13.4f} {row['change']:+8.1%} {row['ndcg@10']:8.4f}")


if __name__ == "__main__":
    main()
