"""retrieval_zoo: a benchmark model zoo for e-commerce embedding-based product retrieval.

Notebook use::

    import retrieval_zoo as rz
    data = rz.load_dataset("simshop-tiny")
    results = rz.run_benchmark("light_two_tower", data, seeds=1)
    rz.leaderboard()            # the committed leaderboard as a polars DataFrame
    qrels, run = rz.load_run(results[0].run_dir)   # ranx objects, ready for ranx.compare
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from retrieval_zoo.data import ProductSearchDataset, list_datasets, load_dataset  # noqa: E402
from retrieval_zoo.models import build_model, list_models, list_variants, load_config  # noqa: E402
from retrieval_zoo.reports import read_leaderboard as leaderboard  # noqa: E402
from retrieval_zoo.runner import RunResult, run_benchmark  # noqa: E402
from retrieval_zoo.runs import load_run  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ProductSearchDataset", "RunResult", "build_model", "leaderboard", "list_datasets", "list_models",
    "list_variants", "load_config", "load_dataset", "load_run", "run_benchmark",
]
