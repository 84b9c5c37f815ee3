"""Shared fixtures: a small label-only dataset built by hand, and quiet, isolated runs."""

from __future__ import annotations

import importlib.util
import os
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
        spec.loader.exec_module(module)
        return module
    return load
