"""Catalogue encoding speed of the fine-tuned MiniLM's shared tower against sentence-transformers' own ``encode``.

The shared recipe (``minilm_finetune`` variant ``shared``) re-encodes the whole catalogue at every validation and
at test, and used to do it at a fifth of the speed of ``SentenceTransformer.encode`` on the same texts. The
reason: ``encode`` sorts a call's texts by length, so each batch pads to about its own length, while the runner
encoded in catalogue order, where every batch of 1,024 holds a text near the 64-token limit and pads all the
others to it. ``TwoTowerModel.catalogue_order`` lets a model choose its order (MiniLM's shared tower: longest
first); the vectors come back in catalogue order and equal the catalogue-order ones to float rounding.

Prints items/s of the three on the same catalogue texts and the ratios, measured in the same process:

    python benchmarks/finetune_encode.py [--dataset icecat] [--items 3000] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
import torch

from retrieval_zoo.data import text
from retrieval_zoo.data.datamodule import RetrievalDataModule
from retrieval_zoo.data.registry import load_dataset
from retrieval_zoo.models.registry import build_model, load_config
from retrieval_zoo.runner import data_settings, fold_view


def smaller_catalogue(dataset, items: int):
    """The dataset with its first ``items`` products (judgments of the others dropped): encoding speed only."""
    from dataclasses import replace

    products = dataset.products.head(items)
    kept = products["product_id"]
    return replace(dataset, products=products,
                   judgments=dataset.judgments.filter(pl.col("product_id").is_in(kept.implode())))


def timed(encode) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    vectors = encode()
    return vectors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="icecat")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--batch", type=int, help="encoding batch (default: the variant's data.eval_batch_size)")
    args = parser.parse_args()
    config = load_config("minilm_finetune", "shared")
    args.batch = args.batch or int(config["data"]["eval_batch_size"])
    module = build_model(config)
    dataset = smaller_catalogue(load_dataset(args.dataset), args.items)
    if dataset.meta.get("cv_folds"):  # cross-validated (Icecat): fold 0's splits
        dataset = fold_view(dataset, 0)
    datamodule = RetrievalDataModule(dataset, set(module.required_fields), data_settings(config["data"]), seed=0)
    module.attach(datamodule)
    texts = module.catalog.texts
    n = len(texts)

    library, library_s = timed(lambda: text.sentence_transformer().encode(
        texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True))
    by_length, by_length_s = timed(lambda: module.encode_catalog(batch_size=args.batch, progress=False))
    length_order = module.model.catalogue_order
    module.model.catalogue_order = lambda catalog: None
    in_order, in_order_s = timed(lambda: module.encode_catalog(batch_size=args.batch, progress=False))
    module.model.catalogue_order = length_order

    print(f"{n:,} {args.dataset} item texts, {torch.get_num_threads()} threads, runner batch {args.batch}:")
    print(f"  sentence-transformers encode (batch 32): {n / library_s:,.0f} items/s")
    print(f"  runner, catalogue order:                 {n / in_order_s:,.0f} items/s "
          f"({library_s / in_order_s:.2f}x the library)")
    print(f"  runner, longest first (shipped):         {n / by_length_s:,.0f} items/s "
          f"({library_s / by_length_s:.2f}x the library, {in_order_s / by_length_s:.2f}x catalogue order)")
    # the runner's item text is cut at item_max_tokens; the library reads up to 256 tokens, so the library's
    # vectors differ for long texts: the two runner orders are what must agree
    print(f"  max |difference| between the runner's two orders: {np.abs(by_length - in_order).max():.2e}")


if __name__ == "__main__":
    main()
