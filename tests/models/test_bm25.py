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


def test_item_text_choice_with_the_better_valid_score_is_indexed():
    """The choice is scored by the caller's function; the winner stays indexed, a tie keeps the default."""
    data = datamodule()
    retriever = BM25Retriever(BM25Config(stopwords=None, item_text_choices=[{"description": 0}]))

    def finds_p0(scores, indices):  # 1 when the description-only words still retrieve p0
        return float(indices[0, 0] == 0 and scores[0, 0] > 0)

    tried = retriever.select_item_text(data, ["waterproof"], k=1, score=finds_p0)
    assert [(c.name, c.score) for c in tried] == [("default", 1.0), ("description=0", 0.0)]
    assert retriever.item_text_change == {} and retriever.retrieve(["waterproof"], k=1)[0][0, 0] > 0

    tried = retriever.select_item_text(data, ["waterproof"], k=1, score=lambda s, i: 1.0 - finds_p0(s, i))
    assert [c.score for c in tried] == [0.0, 1.0] and retriever.item_text_change == {"description": 0}
    assert retriever.corpus(data)[0] == "trail shoe Acme Sports Footwear Hiking"
    assert (retriever.retrieve(["waterproof"], k=1)[0] == 0).all()  # the description is out of the index

    retriever.select_item_text(data, ["waterproof"], k=1, score=lambda s, i: 0.5)
    assert retriever.item_text_change == {}


def test_item_text_choices_are_checked():
    with pytest.raises(ValueError, match="change data.features.item_text budgets"):
        BM25Config(item_text_choices=[{}])
    assert BM25Retriever(BM25Config(fields=["title"])).item_text_choices == []  # named columns: nothing to choose
    retriever = BM25Retriever(BM25Config(item_text_choices=[{"price": 4}]))
    with pytest.raises(Exception, match=r"unknown columns \['price'\]"):
        retriever.select_item_text(datamodule(), ["lamp"], k=1, score=lambda s, i: 0.0)
