"""What MMSE's stage levels hold on a behaviour dataset: the relevance-label mix of each mined level.

MMSE's ranking loss orders a query's items ordered > clicked > unclicked > random; the leaderboard judges
rankings by relevance labels. The loss can only add relevance where the levels differ in relevance, so this
prints, for the train searches' stage lists (``retrieval_zoo.data.stages.mine_from_logs``, as the data module
mines them), each level's share of Exact / Substitute / Complement / Irrelevant items.

    python benchmarks/stage_levels.py [--dataset simshop]
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.data.stages import STAGE_LEVELS, mine_from_logs


def level_label_mix(dataset) -> pl.DataFrame:
    searches = dataset.searches.filter(pl.col("split") == "train")
    product_ids = dataset.products["product_id"].to_list()
    stages = mine_from_logs(dataset.interactions, searches["search_id"].to_list(), product_ids)
    units = np.repeat(np.arange(searches.height), np.diff(stages.offsets))
    names = {level: name for name, level in STAGE_LEVELS.items()}
    pairs = pl.DataFrame({
        "query_id": searches["query_id"].gather(units),
        "product_id": pl.Series(product_ids).gather(stages.items),
        "level": [names[level] for level in stages.levels],
    })
    labelled = pairs.join(dataset.judgments, on=["query_id", "product_id"], how="left").with_columns(
        pl.col("label").fill_null("I"))  # simshop is fully judged: an unjudged pair is Irrelevant
    return (labelled.group_by("level").agg(pl.len().alias("items"),
                                          *[(pl.col("label") == label).mean().round(3).alias(label)
                                            for label in "ESCI"])
            .sort(pl.col("level").replace_strict(STAGE_LEVELS, return_dtype=pl.Int8), descending=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="simshop")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    if not dataset.has_behaviour:
        raise SystemExit(f"error: {args.dataset} has no behaviour logs; its levels come from labels by definition")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(f"{args.dataset}: label mix of each stage level (train searches)")
        print(level_label_mix(dataset))


if __name__ == "__main__":
    main()
