"""What MMSE's stage levels hold on a behaviour dataset: the relevance-label mix of each mined level.

MMSE's ranking loss orders a query's items ordered > clicked > unclicked > random; the leaderboard judges
rankings by relevance labels. The loss can only add relevance where the levels differ in relevance, so this
prints, for the train searches' stage lists (``retrieval_zoo.data.stages.mine_from_logs``, as the data module
mines them), each level's share of Exact / Substitute / Complement / Irrelevant items (``--by-group``: per
query group too).

    python benchmarks/stage_levels.py [--dataset simshop] [--by-group]
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.data.stages import STAGE_LEVELS, mine_from_logs


def level_label_mix(dataset, by_group: bool = False) -> pl.DataFrame:
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
    keys = ["level"]
    if by_group:
        labelled = labelled.join(dataset.queries.select("query_id", "group"), on="query_id")
        keys = ["group", "level"]
    order = [pl.col("level").replace_strict(STAGE_LEVELS, return_dtype=pl.Int8)]
    return (labelled.group_by(keys).agg(pl.len().alias("items"),
                                       *[(pl.col("label") == label).mean().round(3).alias(label) for label in "ESCI"])
            .sort([*keys[:-1], *order], descending=[False] * (len(keys) - 1) + [True]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="simshop")
    parser.add_argument("--by-group", action="store_true", help="one block of rows per query group")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    if not dataset.has_behaviour:
        raise SystemExit(f"error: {args.dataset} has no behaviour logs; its levels come from labels by definition")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=-1):
        print(f"{args.dataset}: label mix of each stage level (train searches)")
        print(level_label_mix(dataset, args.by_group))


if __name__ == "__main__":
    main()
