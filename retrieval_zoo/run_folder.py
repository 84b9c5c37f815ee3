"""A run's folder, written where the runner stages it (``store.commit`` moves it in): the metrics, the ranked run
(parquet and a TREC run file), the judgments it was scored with, per-query metrics, the resolved config, the
selected weights, package versions; the measured wall-clock figures apart in ``timings.json``, so an identical
rerun reproduces every other file byte for byte.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import torch
import yaml

from retrieval_zoo.data.dataset import ProductSearchDataset
from retrieval_zoo.data.stages import LABEL_MAPPING_NOTE
from retrieval_zoo.reports import RECIPE

if TYPE_CHECKING:
    from retrieval_zoo.models.base import RetrievalModule
    from retrieval_zoo.runner import RunResult


def protocol_text(dataset: ProductSearchDataset) -> str:
    meta = dataset.meta
    parts = [meta.get("protocol", dataset.name), f"catalogue {dataset.products.height:,} items"]
    if meta.get("label_mapping"):
        parts.append(str(meta["label_mapping"]))
    if not meta.get("fully_judged", False):
        parts.append("unjudged items count as not relevant")
    if not dataset.has_behaviour:
        parts.append(f"{LABEL_MAPPING_NOTE} (models trained on stage levels; labels measure relevance, "
                     "not engagement)")
    return "; ".join(parts)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import faiss

    names = ["torch", "pytorch-lightning", "faiss-cpu", "ranx", "polars", "sentence-transformers", "open_clip_torch",
             "transformers", "tokenizers", "numpy", "bm25s"]
    found = {}
    for package in names:
        try:
            found[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing optional package is simply not listed
            continue
    found["python"] = platform.python_version()
    found["faiss_compile"] = faiss.get_compile_options()
    # CPU float reductions split by thread count: a rerun at another count moves scores by ~1e-8 (Icecat
    # mmse/pretrained at 1 vs 2 threads: every score, no metric), enough to reorder an exact near-tie
    found["torch_threads"] = str(torch.get_num_threads())
    return found


def qrels_frame(targets) -> pl.DataFrame:
    """Every judgment kind of the evaluation targets as one frame (kind, q_id, doc_id, score), sorted."""
    return pl.concat([frame.select(pl.lit(kind).alias("kind"), "q_id", "doc_id", pl.col("score").cast(pl.Int64))
                      for kind, frame in targets.qrels.items()]).sort("kind", "q_id", "doc_id")


def write_trec_run(run: pl.DataFrame, path: Path, tag: str) -> None:
    """The ranked run in TREC format (``q_id Q0 doc_id rank score tag``), ties ordered by doc id as the metrics
    order them; ranx (``Run.from_file(path, kind="trec")``), trec_eval and pytrec_eval read it."""
    ranked = run.sort(["q_id", "score", "doc_id"], descending=[False, True, False]).with_columns(
        (pl.int_range(pl.len()).over("q_id") + 1).alias("rank"))
    ranked.select("q_id", pl.lit("Q0").alias("iter"), "doc_id", "rank", "score", pl.lit(tag).alias("tag")).write_csv(
        path, separator=" ", include_header=False)


# the measured wall-clock figures of a run: they differ between identical reruns, so they live in timings.json
# (and the board's cost columns), never in the files an identical rerun reproduces byte for byte
def is_timing(key: str) -> bool:
    return key.endswith(("_seconds", "_per_s", "_ms")) or key == "validation_seconds"


def write_run_folder(result: RunResult, dataset: ProductSearchDataset, folder: Path, run: pl.DataFrame,
               per_query: pl.DataFrame, units: pl.DataFrame, targets, valid_curve: pl.DataFrame | None,
               valid_queries: pl.DataFrame | None = None) -> None:
    """Everything of the run in ``folder`` (its staging place; ``store.commit`` moves it to ``result.run_dir``)."""
    folder.mkdir(parents=True, exist_ok=True)  # the folds' weights may be there already (write_model_state)
    (folder / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
    # in the config's own order: some orders mean something (data.features.item_text composes in key order), and a
    # reloaded model (serving.py) must rebuild its inputs exactly
    (folder / "config.yaml").write_text(yaml.safe_dump(result.config, sort_keys=False))
    costs = {k: v for k, v in result.costs.items() if not is_timing(k)}
    meta = {"dataset": result.dataset, "dataset_spec": result.dataset_spec, "model": result.model,
            "variant": result.variant, "seed": result.seed, "config_hash": result.config_hash,
            "dataset_fingerprint": result.dataset_fingerprint, "recipe": RECIPE, "costs": costs,
            "versions": versions(), "dataset_description": dataset.describe(), "protocol": protocol_text(dataset),
            "dropped": dataset.meta.get("dropped", {}), "device": "cuda" if torch.cuda.is_available() else "cpu"}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    timings = {k: v for k, v in result.costs.items() if is_timing(k)}
    timings["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    (folder / "timings.json").write_text(json.dumps(timings, indent=2, sort_keys=True))
    run.write_parquet(folder / "run.parquet")
    per_query.sort("metric", "unit_id").write_parquet(folder / "per_query.parquet")  # ranx's order varies
    units.write_parquet(folder / "units.parquet")
    qrels_frame(targets).write_parquet(folder / "qrels.parquet")  # the judgments it was scored with
    write_trec_run(run, folder / "run.trec", f"{result.model}-{result.variant}")
    if valid_curve is not None:  # valid metrics before training (epoch 0) and after each checked epoch
        valid_curve.drop([c for c in valid_curve.columns if is_timing(c)]).write_csv(folder / "valid_curve.csv")
    if valid_queries is not None:  # each check's value of every valid unit: the curve's means, query by query
        order = [c for c in ("fold", "check", "metric", "unit_id") if c in valid_queries.columns]
        valid_queries.sort(order).write_parquet(folder / "valid_per_query.parquet")




# -- the selected model states (reuse: retrieval_zoo/serving.py) ---------------------------------------------
def model_state_file(fold: int | None = None) -> str:
    """The file of a run folder holding the selected weights: ``model.pt``, per fold ``model-fold<k>.pt``."""
    return "model.pt" if fold is None else f"model-fold{fold}.pt"


def selected_state(module: RetrievalModule) -> dict[str, torch.Tensor]:
    """The module's weights as it encoded the test units (the state selected on valid), on the CPU.

    Not copied when they are already there: the module is done with (each fold builds its own). A table shared
    by several submodules (MGDSPR's item table is reached by three paths) stays one tensor, copied once from a
    GPU, so ``torch.save`` writes it once: copies per name tripled it (1.2M-product ESCI, MGDSPR: 2.1 GB more
    at the run's peak memory)."""
    copies: dict[tuple, torch.Tensor] = {}

    def on_cpu(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if tensor.device.type == "cpu":
            return tensor
        view = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if view not in copies:
            copies[view] = tensor.cpu()
        return copies[view]

    return {name: on_cpu(tensor) for name, tensor in module.state_dict().items()}


def write_model_state(state: dict[str, torch.Tensor], fold: int | None, folder: Path) -> None:
    """The selected state of one trained model (``fold``: its fold under cross-validation, else None) as
    ``torch.save`` of the RetrievalModule's ``state_dict`` (the model's and the loss's weights; what ``prepare``
    derives from the data is rebuilt on load). Retrievers without weights (BM25) have none to write."""
    folder.mkdir(parents=True, exist_ok=True)
    # streamed to an open file, not a path: the archive's inner folder name is then torch's fixed one for
    # file objects (the bytes reproducible), and no in-memory copy of the weights is made
    with open(folder / model_state_file(fold), "wb") as file:
        torch.save(state, file)
