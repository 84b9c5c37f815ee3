"""Catalogue encoding speed by items per batch (``data.eval_batch_size``), against 1024 in the same run.

Torch on CPU takes each tensor from glibc's malloc. A block above 32 MiB (glibc's largest mmap threshold) is
mapped fresh and zero-filled page by page on every batch, and a freed heap top above the trim threshold goes back
to the OS and is faulted in again by the next batch. A Transformer tower over 64-token items (MRSE, MMSE on
ESCI-length texts) passes both at 1024 items per batch: much of the encoding is then the kernel's (system CPU
seconds, minor page faults). The script encodes the untrained model's catalogue twice per batch size and prints
items/s, the ratio against 1024, system seconds, minor faults and the largest difference from the 1024 vectors.

    python benchmarks/esci_scale.py --products 120000 --other-locales 10000 --judgments 60000 --keep /tmp/esci120k
    python benchmarks/encode_batch.py --model mrse --dataset esci:path=/tmp/esci120k/raw [--sizes 1024 256 128]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from retrieval_zoo.data import load_dataset
from retrieval_zoo.models import build_model, load_config
from retrieval_zoo.runner import data_module_for

BASELINE = 1024  # the default before small batches


def attached_model(model: str, dataset: str):
    config = load_config(model)
    torch.manual_seed(0)
    module = build_model(config)
    datamodule = data_module_for(config, load_dataset(dataset), module, seed=0)
    datamodule.setup()
    module.attach(datamodule)
    return module, int(config["data"]["eval_batch_size"])


def timed_encoding(module, batch_size: int) -> tuple[np.ndarray, float, float, int]:
    """(vectors, seconds, system CPU seconds, minor page faults) of one catalogue encoding."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    vectors = module.encode_catalog(batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return vectors, seconds, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mrse")
    parser.add_argument("--dataset", default="simshop")
    parser.add_argument("--sizes", type=int, nargs="+", help="batch sizes after 1024 (default: 256 128 and the "
                                                               "model's shipped size)")
    args = parser.parse_args()
    module, shipped = attached_model(args.model, args.dataset)
    sizes = [BASELINE, *dict.fromkeys(args.sizes or [256, 128, shipped])]
    print(f"{args.model} on {args.dataset}: {len(module.catalog):,} items, {torch.get_num_threads()} threads, "
          f"shipped eval_batch_size {shipped}")
    reference, base_rate = None, None
    for size in sizes:
        for repeat in (1, 2):
            vectors, seconds, system, faults = timed_encoding(module, size)
            reference = vectors if reference is None else reference
            rate = len(vectors) / seconds
            base_rate = base_rate or rate
            print(f"batch {size:>5} #{repeat}: {rate:>10,.0f} items/s  x{rate / base_rate:.2f} vs {BASELINE}  "
                  f"system {system:5.1f} s  minor faults {faults:>10,}  "
                  f"max |diff| {float(np.abs(vectors - reference).max()):.1e}")


if __name__ == "__main__":
    main()
