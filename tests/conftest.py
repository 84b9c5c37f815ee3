"""Shared fixtures: a small label-only dataset built by hand, and quiet, isolated runs."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("RETRIEVAL_ZOO_WANDB", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from retrieval_zoo.data.dataset import ProductSearchDataset  # noqa: E402

TYPES = ["shoe", "shirt", "lamp", "phone", "cable", "chair", "mug", "bag"]
COLORS = ["red", "blue", "green", "black", "white"]
BRANDS = ["acme", "zenit", "nova", "orbit"]


def make_label_dataset(n_products: int = 240) -> ProductSearchDataset:
    """Products '<brand> <color> <type>'; a query '<color> <type>' judges E (both match) or S (type only)."""
    products = [
        {"product_id": f"p{i}", "title": f"{BRANDS[(i // 40) % 4]} {COLORS[(i // 8) % 5]} {TYPES[i % 8]} deluxe",
         "description": "", "bullets": "", "brand": BRANDS[(i // 40) % 4], "color": COLORS[(i // 8) % 5],
         "category": f"home > {TYPES[i % 8]}", "shop_id": None}
        for i in range(n_products)
    ]
    queries, judgments = [], []
    for n, (kind, color) in enumerate((t, c) for t in TYPES for c in COLORS):
        query_id = f"q{n}"
        queries.append({"query_id": query_id, "query": f"{color} {kind}", "split": "test" if n % 3 == 0 else "train",
                        "group": "colour"})
        for product in products:
            if kind in product["title"]:
                label = "E" if color in product["title"] else "S"
                judgments.append({"query_id": query_id, "product_id": product["product_id"], "label": label})
    return ProductSearchDataset("toy", pl.DataFrame(products, schema_overrides={"shop_id": pl.Utf8}),
                                pl.DataFrame(queries), pl.DataFrame(judgments), meta={"protocol": "toy labels"})


@pytest.fixture
def label_dataset() -> ProductSearchDataset:
    return make_label_dataset()


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of benchmarks/ by name (the folder is not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # registered first, as an import would: dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    return load


TINY_ENCODER_WIDTH = 48  # not 384: shows the width flowing from the encoder, not a constant


def save_tiny_encoder(folder: Path, seed: int = 0) -> Path:
    """A sentence-transformers model saved on disk, no download: a 2-layer BERT of width 48, randomly initialised,
    over a character-level WordPiece vocabulary, mean-pooled (as all-MiniLM-L6-v2 is)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers import models as token_models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = folder / "raw"
    raw.mkdir(parents=True)
    chars = [*"abcdefghijklmnopqrstuvwxyz0123456789"]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    wordpiece = Tokenizer(token_models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=TINY_ENCODER_WIDTH, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(TINY_ENCODER_WIDTH, pooling_mode="mean")
    path = folder / "encoder"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture(scope="session")
def save_encoder():
    """``save_tiny_encoder`` itself, for a test that needs a second encoder."""
    return save_tiny_encoder


@pytest.fixture(scope="session")
def check_longest_first():
    """A check that an attached model's ``catalogue_order`` puts the longest item texts first: a permutation of the
    catalogue, lengths never rising, over texts of several lengths (else any order would pass)."""
    import numpy as np

    def check(module) -> None:
        order = module.model.catalogue_order(module.catalog)
        lengths = (module.catalog.tensors["item_tokens"] != 0).sum(1).numpy()
        assert len(set(lengths.tolist())) > 1
        assert sorted(order.tolist()) == list(range(len(lengths))) and (np.diff(lengths[order]) <= 0).all()

    return check
