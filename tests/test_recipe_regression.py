"""benchmarks/recipe_regression.py: issue 19's simshop check (no rerun row's NDCG@10 drops by more than 0.005)."""

from __future__ import annotations

import polars as pl
import pytest

from retrieval_zoo.reports import RECIPE


@pytest.fixture(scope="module")
def regression(load_benchmark):
    return load_benchmark("recipe_regression")


def board(rows: list[tuple[str, str, float, str | None]]) -> pl.DataFrame:
    return pl.DataFrame([{"dataset": "simshop", "model": m, "variant": v, "seed": str(s), "ndcg@10": str(n),
                          "recipe": r} for m, v, n, r in rows for s in (0, 1)], schema_overrides={"recipe": pl.Utf8})


def test_a_rerun_row_that_drops_fails_and_old_recipe_rows_are_not_judged(regression):
    before = board([("bm25", "default", 0.89, None), ("mgdspr", "default", 0.80, None), ("mrse", "default", 0.9, None)])
    now = board([("bm25", "default", 0.88, RECIPE), ("mgdspr", "default", 0.797, RECIPE),
                 ("mrse", "default", 0.5, "2026-01-01"), ("mmse", "default", 0.9, RECIPE)])
    table = regression.compare(regression.row_means(before), regression.row_means(now))
    verdicts = dict(zip(table["model"], table["verdict"], strict=True))
    assert verdicts == {"bm25": "DROPPED", "mgdspr": "ok", "mrse": "not rerun", "mmse": "new row"}
    assert "| simshop | bm25/default | 2 | 0.8900 | 0.8800 | -0.0100 | DROPPED | – | – |" in regression.markdown(table, "x")
