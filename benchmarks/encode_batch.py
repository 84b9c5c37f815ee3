"""Catalogue encoding speed by items per batch (``data.eval_batch_size``), against 1024 in the same run.

Torch on CPU takes each tensor from glibc's malloc. A block above 32 MiB (glibc's largest mmap threshold) is
mapped fresh and zero-filled page by page on every batch, and a freed heap top above the trim threshold goes back
to the OS and is faulted in again by the next batch. A Transformer tower over 64-token items (MRSE, MMSE on
ESCI-length texts) passes both at 1024 items per batch: much of the encoding is then the kernel's (system CPU
seconds, minor page faults). The script encodes the untrained model's catalogue twice per batch size and prints
items/s, the ratio against 1024, system seconds, minor faults and the largest difference from the 1024 vectors.

``--sentence`` times the frozen sentence encoder instead (all-MiniLM-L6-v2 through sentence-transformers, the
features every ``pretrained`` variant and minilm_zeroshot read; ``text.SENTENCE_BATCH``) on a sample of the
item texts the model's ``pretrained`` variant composes, against 256 texts per batch (the size before 32): the
same faults at 256 (attention scores and the feed-forward blocks pass 32 MiB), not at 32.

    python benchmarks/esci_scale.py --products 120000 --other-locales 10000 --judgments 60000 --keep /tmp/esci120k
    python benchmarks/encode_batch.py --model mrse --dataset esci:path=/tmp/esci120k/raw [--sizes 1024 256 128]
    python benchmarks/encode_batch.py --sentence --model light_two_tower --dataset icecat [--texts 2000]

``--order`` times the model's own catalogue order (``catalogue_order``: MRSE's, MMSE's and the shared MiniLM
tower's longest texts first) against catalogue order at the shipped batch size, with the padded tokens each
encodes: a tower that trims each batch to its longest text pads less when texts of a length are batched together.

    python benchmarks/encode_batch.py --order --model mrse --variant pretrained --dataset icecat
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from retrieval_zoo.data import load_dataset, text
from retrieval_zoo.data.features import compose_item_texts
from retrieval_zoo.models import build_model, load_config
from retrieval_zoo.runner import data_module_for, data_settings, fold_view

BASELINE = 1024  # the catalogue's default before small batches
SENTENCE_BASELINE = 256  # the sentence encoder's before text.SENTENCE_BATCH


def attached_model(model: str, dataset: str, variant: str | None = None):
    config = load_config(model, variant)
    torch.manual_seed(0)
    module = build_model(config)
    data = load_dataset(dataset)
    if data.meta.get("cv_folds"):  # Icecat: every query is a test query until a fold's view deals them
        data = fold_view(data, 0)
    datamodule = data_module_for(config, data, module, seed=0)
    datamodule.setup()
    module.attach(datamodule)
    return module, int(config["data"]["eval_batch_size"])


def sampled_item_texts(model: str, dataset: str, count: int) -> list[str]:
    """``count`` item texts (a seeded sample) as ``model``'s pretrained variant composes them for the encoder."""
    settings = data_settings(load_config(model, "pretrained")["data"])
    products = load_dataset(dataset).products
    rows = np.sort(np.random.default_rng(0).choice(products.height, min(count, products.height), replace=False))
    return compose_item_texts(products[rows], settings.features.item_text)


def timed_encoding(encode, batch_size: int) -> tuple[np.ndarray, float, float, int]:
    """(vectors, seconds, system CPU seconds, minor page faults) of one ``encode(batch_size)``."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    vectors = encode(batch_size)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return vectors, seconds, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mrse")
    parser.add_argument("--dataset", default="simshop")
    parser.add_argument("--sizes", type=int, nargs="+", help="batch sizes after the baseline (default: 256 128 and "
                                                               "the model's shipped size; --sentence: 64 32 16)")
    parser.add_argument("--sentence", action="store_true", help="time the frozen sentence encoder instead")
    parser.add_argument("--texts", type=int, default=2000, help="--sentence: item texts sampled (default 2000)")
    parser.add_argument("--order", action="store_true", help="time the model's catalogue order against "
                                                             "catalogue order instead")
    parser.add_argument("--variant", default=None, help="a variant of the model's config (default: its default)")
    args = parser.parse_args()
    if args.order:
        module, shipped = attached_model(args.model, args.dataset, args.variant)
        print(f"{args.model}/{args.variant or 'default'} on {args.dataset}: {len(module.catalog):,} items, "
              f"{torch.get_num_threads()} threads, eval_batch_size {shipped}")
        print_order_rates(module, shipped)
        return
    if args.sentence:
        texts = sampled_item_texts(args.model, args.dataset, args.texts)
        text.sentence_transformer()  # loaded before the first timed pass

        def encode(size: int) -> np.ndarray:
            return text.encode_sentences(texts, size)

        baseline, sizes = SENTENCE_BASELINE, args.sizes or [64, text.SENTENCE_BATCH, 16]
        print(f"sentence encoder on {len(texts):,} item texts of {args.model}/pretrained on {args.dataset} "
              f"({np.mean([len(t.split()) for t in texts]):.1f} words each), {torch.get_num_threads()} threads, "
              f"shipped batch {text.SENTENCE_BATCH}")
    else:
        module, shipped = attached_model(args.model, args.dataset)

        def encode(size: int) -> np.ndarray:
            return module.encode_catalog(batch_size=size, progress=False)

        baseline, sizes = BASELINE, args.sizes or [256, 128, shipped]
        print(f"{args.model} on {args.dataset}: {len(module.catalog):,} items, {torch.get_num_threads()} threads, "
              f"shipped eval_batch_size {shipped}")
    print_rates(encode, [baseline, *dict.fromkeys(size for size in sizes if size != baseline)], baseline)


def print_rates(encode, sizes: list[int], baseline: int) -> None:
    """Each size twice: items/s, the ratio against the first size, kernel time, faults, distance from its vectors."""
    reference, base_rate = None, None
    for size in sizes:
        for repeat in (1, 2):
            vectors, seconds, system, faults = timed_encoding(encode, size)
            reference = vectors if reference is None else reference
            rate = len(vectors) / seconds
            base_rate = base_rate or rate
            print(f"batch {size:>5} #{repeat}: {rate:>10,.0f} items/s  x{rate / base_rate:.2f} vs {baseline}  "
                  f"system {system:5.1f} s  minor faults {faults:>10,}  "
                  f"max |diff| {float(np.abs(vectors - reference).max()):.1e}")


def padded_tokens(ids: torch.Tensor, order: np.ndarray, batch_size: int) -> int:
    """Token slots a tower encodes when each batch (rows taken in ``order``) is trimmed to its longest text."""
    lengths = (ids != text.PAD_ID).sum(1).numpy()[order]
    return int(sum(lengths[s : s + batch_size].max() * len(lengths[s : s + batch_size])
                   for s in range(0, len(lengths), batch_size)))


def print_order_rates(module, batch_size: int) -> None:
    """Catalogue order, then the model's own order, each twice: items/s, ratio, padded tokens, vector distance."""
    ordered = module.model.catalogue_order(module.catalog)
    if ordered is None:
        raise SystemExit(f"error: {module.name} encodes in catalogue order already (no catalogue_order of its own)")
    ids = module.catalog.tensors["item_tokens"]
    module.encode_catalog(batch_size=batch_size, progress=False)  # warm-up, untimed: the first pass is slower
    reference, base_rate = None, None
    try:
        for label, order in (("catalogue order", None), ("model's order", ordered)):
            module.model.catalogue_order = lambda catalog, order=order: order  # shadows the method for this pass
            rows = np.arange(len(ids)) if order is None else order
            rates = []
            for repeat in (1, 2):
                vectors, seconds, _, _ = timed_encoding(
                    lambda size: module.encode_catalog(batch_size=size, progress=False), batch_size)
                reference = vectors if reference is None else reference
                rates.append(len(vectors) / seconds)
                print(f"{label:>15} #{repeat}: {rates[-1]:>10,.0f} items/s  padded tokens "
                      f"{padded_tokens(ids, rows, batch_size):>10,}  max |diff| "
                      f"{float(np.abs(vectors - reference).max()):.1e}")
            base_rate = base_rate or float(np.mean(rates))
            print(f"{label:>15}: {np.mean(rates):,.0f} items/s, x{np.mean(rates) / base_rate:.2f} vs catalogue order")
    finally:
        del module.model.catalogue_order  # the class's method again, also after an interrupted pass


if __name__ == "__main__":
    main()
