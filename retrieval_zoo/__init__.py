"""retrieval_zoo: a benchmark model zoo for e-commerce embedding-based product retrieval.

Notebook use::

    import retrieval_zoo as rz
    data = rz.load_dataset("simshop-tiny")
    results = rz.run_benchmark("light_two_tower", data, seeds=1)
    rz.leaderboard()            # the committed leaderboard as a polars DataFrame
    qrels, run = rz.load_run(results[0].run_dir)   # ranx objects, ready for ranx.compare
    model = rz.load_model(results[0].run_dir)      # the run's selected model: .search(["red shoe"], 10)
    results[0].per_query(); rz.compare([results[0], other_run])   # analysis of finished runs
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from retrieval_zoo.analysis import compare  # noqa: E402
from retrieval_zoo.data import ProductSearchDataset, list_datasets, load_dataset  # noqa: E402
from retrieval_zoo.models import build_model, list_models, list_variants, load_config  # noqa: E402
from retrieval_zoo.reports import read_leaderboard as leaderboard  # noqa: E402
from retrieval_zoo.runner import RunResult, run_benchmark  # noqa: E402
from retrieval_zoo.runs import export_mteb, load_run  # noqa: E402
from retrieval_zoo.serving import load_model  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ProductSearchDataset", "RunResult", "build_model", "compare", "export_mteb", "leaderboard", "list_datasets",
    "list_models", "list_variants", "load_config", "load_dataset", "load_model", "load_run", "run_benchmark",
]
