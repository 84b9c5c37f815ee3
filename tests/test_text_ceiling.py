"""The text-only NDCG@10 ceiling of benchmarks/text_ceiling.py on a hand-built query (exact values)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest


@pytest.fixture(scope="module")
def ceiling(load_benchmark):
    return load_benchmark("text_ceiling")


# p0 a red dress that says so; p1, p2 image-only dresses (red, blue); p3 a dress whose title says blue;
# p4 an image-only dress of brand B; p5 a shirt
PRODUCTS = pl.DataFrame({"product_type": ["dress"] * 5 + ["shirt"], "image_only": [False, True, True, False, True, False],
                         "brand": ["A", "A", "A", "A", "B", "A"], "material": ["silk"] * 6})
GAINS = np.array([1.0, 1.0, 0.1, 0.1, 0.1, 0.0])


def dcg(gains: list[float]) -> float:
    return sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))


def test_image_only_matches_form_one_block_at_their_mean_gain(ceiling):
    fields = ceiling.intent_fields("type=dress;color=red")
    assert fields == {"type": "dress", "color": "red"}
    # the pool is p1, p2, p4 (image-only dresses): mean gain 0.4, ranked after p0 and before p3
    expected = dcg([1.0, 0.4, 0.4, 0.4, 0.1, 0.0]) / dcg([1.0, 1.0, 0.1, 0.1, 0.1, 0.0])
    assert ceiling.query_ceiling(fields, PRODUCTS, GAINS) == pytest.approx(expected, rel=1e-9)


def test_a_named_text_attribute_narrows_the_pool(ceiling):
    # brand A is written in text: p4 (brand B) is known not to match, so the pool is p1, p2 (mean 0.55)
    fields = ceiling.intent_fields("type=dress;brand=A;style=striped")
    expected = dcg([1.0, 0.55, 0.55, 0.1, 0.1, 0.0]) / dcg([1.0, 1.0, 0.1, 0.1, 0.1, 0.0])
    assert ceiling.query_ceiling(fields, PRODUCTS, GAINS) == pytest.approx(expected, rel=1e-9)


def test_text_visible_intents_have_ceiling_one_and_unjudgeable_queries_none(ceiling):
    assert ceiling.query_ceiling(ceiling.intent_fields("type=dress;material=silk"), PRODUCTS, GAINS) == 1.0
    assert ceiling.query_ceiling(ceiling.intent_fields("category=Clothing"), PRODUCTS, GAINS) == 1.0
    assert math.isnan(ceiling.query_ceiling({"type": "dress", "color": "red"}, PRODUCTS, np.zeros(6)))


def test_expected_dcg_keeps_only_the_top_ten(ceiling):
    gains = np.ones(12)
    assert ceiling.expected_dcg(gains, np.zeros(12, dtype=bool)) == pytest.approx(dcg([1.0] * 10))


def test_top_composition_sorts_each_slot_by_what_a_text_model_can_know(ceiling):
    products = PRODUCTS.with_columns(pl.Series("product_id", [f"p{i}" for i in range(6)]))
    dataset = SimpleNamespace(
        products=products,
        queries=pl.DataFrame({"query_id": ["q1"], "intent": ["type=dress;color=red;brand=A"]}),
        judgments=pl.DataFrame({"query_id": ["q1"] * 4, "product_id": ["p0", "p1", "p2", "p3"],
                                "label": ["E", "E", "S", "S"]}),
    )
    units = pl.DataFrame({"unit_id": ["s1", "s2"], "query_id": ["q1", "q1"], "group": ["image_attr", "text_attr"]})
    # s1's top: p3 (title says blue), p1 (image-only), p0 (title says red), p4 (brand B), p5 (a shirt)
    run = pl.DataFrame({"q_id": ["s1"] * 5 + ["s2"], "doc_id": ["p3", "p1", "p0", "p4", "p5", "p0"],
                        "score": [5.0, 4.0, 3.0, 2.0, 1.0, 9.0]})
    shares = dict(ceiling.top_composition(run, units, dataset).iter_rows())
    assert shares == {"same type, text names another colour/style": 0.2, "image-only, text matches": 0.2,
                      "exact, attribute in text": 0.2, "same type, other brand/material": 0.2, "other type": 0.2}
