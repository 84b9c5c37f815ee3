"""BM25 indexes the composed item text (data.features.item_text) by default, or named product columns whole."""

from __future__ import annotations

import polars as pl
import pytest

from retrieval_zoo.data.datamodule import DataSettings, RetrievalDataModule
from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.data.features import FeatureSettings
from retrieval_zoo.models.bm25 import BM25Config, BM25Retriever


def dataset() -> ProductSearchDataset:
    products = pl.DataFrame({
        "product_id": ["p0", "p1", "p2"], "title": ["trail shoe", "desk lamp", "coffee mug"],
        "description": ["waterproof membrane for wet paths", "", "stoneware"], "bullets": ["", "", "- dishwasher"],
        "brand": ["Acme", "Lumo", "Nova"], "color": ["", "", ""],
        "category": ["Sports > Footwear > Hiking", "Home > Lighting", ""], "shop_id": [None] * 3,
    }, schema_overrides={"shop_id": pl.Utf8})
    queries = pl.DataFrame({"query_id": ["q0", "q1"], "query": ["waterproof hiking", "lamp"],
                            "split": ["test", "train"], "group": [None, None]}, schema_overrides={"group": pl.Utf8})
    judgments = pl.DataFrame({"query_id": ["q0", "q1"], "product_id": ["p0", "p1"], "label": ["E", "E"]})
    return ProductSearchDataset("bm25-toy", products, queries, judgments)


def datamodule(item_text: dict[str, int] | None = None) -> RetrievalDataModule:
    features = FeatureSettings(item_text=item_text) if item_text else FeatureSettings()
    return RetrievalDataModule(dataset(), set(), DataSettings(features=features))


def test_default_index_is_the_composed_item_text():
    retriever = BM25Retriever(BM25Config(stopwords=None))
    data = datamodule()
    retriever.index(data)
    assert retriever.corpus(data) == ["trail shoe Acme Sports Footwear Hiking waterproof membrane for wet paths",
                                      "desk lamp Lumo Home Lighting", "coffee mug Nova stoneware"]
    scores, items = retriever.retrieve(["waterproof hiking"], k=1)
    assert items.tolist() == [[0]] and scores[0, 0] > 0  # both words are outside the title


def test_item_text_setting_changes_what_bm25_sees():
    retriever = BM25Retriever(BM25Config(stopwords=None))
    retriever.index(datamodule({"title": 32}))
    scores, _ = retriever.retrieve(["waterproof hiking"], k=3)
    assert (scores == 0).all()


def test_fields_index_named_columns_whole():
    retriever = BM25Retriever(BM25Config(stopwords=None, fields=["title", "bullets"]))
    assert retriever.corpus(datamodule()) == ["trail shoe ", "desk lamp ", "coffee mug - dishwasher"]
    with pytest.raises(ValueError, match=r"unknown product columns \['price'\]; valid columns: product_id"):
        BM25Retriever(BM25Config(fields=["title", "price"])).corpus(datamodule())
