"""Multi-stage signal mining (MMSE, WWW 2023): for each query unit, its items at four levels of engagement.

Levels: ordered (3) > clicked (2) > unclicked, i.e. exposed but not clicked (1) > randomly sampled (0).
From behaviour logs (simshop) a search's exposure list gives levels 1-3. Datasets with labels only map labels
to levels — E -> ordered, S -> clicked, C and I -> unclicked (they were shown in a result list), unjudged ->
random — which measures relevance, not engagement; every table built on this mapping says so.
Random items (level 0) are drawn at batch time (see datamodule.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

STAGE_LEVELS = {"random": 0, "unclicked": 1, "clicked": 2, "ordered": 3}
LABEL_TO_LEVEL = {"E": 3, "S": 2, "C": 1, "I": 1}
ACTION_TO_LEVEL = {"exposure": 1, "click": 2, "order": 3}
LABEL_MAPPING_NOTE = "stage levels from labels: E->ordered, S->clicked, C/I->unclicked, unjudged->random"


@dataclass
class StageLists:
    """Per unit u, items ``items[offsets[u]:offsets[u+1]]`` with their ``levels`` (CSR layout)."""

    offsets: np.ndarray
    items: np.ndarray
    levels: np.ndarray

    def of(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[unit], self.offsets[unit + 1]
        return self.items[lo:hi], self.levels[lo:hi]

    def pairs_at_least(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(unit, item) for every stage item with at least ``level``: the training positives."""
        units = np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))
        keep = self.levels >= level
        return units[keep], self.items[keep]


def mine_from_logs(interactions: pl.DataFrame, unit_ids: list[str], product_ids: list[str]) -> StageLists:
    """Each search's exposed, clicked and ordered items; an item keeps the highest level it reached."""
    graded = interactions.filter(pl.col("action").is_in(list(ACTION_TO_LEVEL)) & pl.col("search_id").is_not_null())
    graded = graded.with_columns(
        pl.col("action").replace_strict(ACTION_TO_LEVEL, return_dtype=pl.Int8).alias("level")
    ).group_by("search_id", "product_id").agg(pl.col("level").max())
    return _to_csr(graded.rename({"search_id": "unit_id"}), unit_ids, product_ids)


def mine_from_labels(judgments: pl.DataFrame, unit_ids: list[str], product_ids: list[str]) -> StageLists:
    """Each query's judged items, levels from the label mapping in the module docstring."""
    graded = judgments.with_columns(
        pl.col("label").replace_strict(LABEL_TO_LEVEL, return_dtype=pl.Int8).alias("level")
    ).select(pl.col("query_id").alias("unit_id"), "product_id", "level")
    return _to_csr(graded, unit_ids, product_ids)


def _to_csr(graded: pl.DataFrame, unit_ids: list[str], product_ids: list[str]) -> StageLists:
    units = pl.DataFrame({"unit_id": unit_ids, "unit": np.arange(len(unit_ids))})
    items = pl.DataFrame({"product_id": product_ids, "item": np.arange(len(product_ids))})
    rows = (
        graded.join(units, on="unit_id").join(items, on="product_id")
        .sort("unit", pl.col("level"), "item", descending=[False, True, False])
    )
    counts = np.bincount(rows["unit"].to_numpy(), minlength=len(unit_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return StageLists(offsets, rows["item"].to_numpy().astype(np.int64), rows["level"].to_numpy().astype(np.int64))
