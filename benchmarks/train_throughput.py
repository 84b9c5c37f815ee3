"""Training throughput (query-item pairs per second) of the light two-tower, and of any model given.

Trains one epoch on the default simshop through the normal runner path (Lightning Trainer, in-batch softmax)
and prints pairs/s measured over the training epochs (Lightning start-up excluded). Target for the light
two-tower on 2 cores: >= 3,000 pairs/s.

    python benchmarks/train_throughput.py [--model light_two_tower] [--variant default] [--dataset simshop]
        [--set k=v ...]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from retrieval_zoo.runner import run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="light_two_tower")
    parser.add_argument("--variant", default=None, help="a variant of the model's config (default: its default)")
    parser.add_argument("--dataset", default="simshop")
    parser.add_argument("--set", action="extend", nargs="+", default=[])  # repeated flags add up
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as results:
        [result] = run_benchmark(args.model, args.dataset, variant=args.variant, seeds=1,
                                 overrides=["trainer.max_epochs=1", *args.set], results_dir=results,
                                 wandb="disabled", progress=False, update_leaderboard=False, print_table=False)
    costs = result.costs
    row = result.row()
    print(f"{row['model']}/{row['variant']} on {args.dataset}, {torch.get_num_threads()} threads: "
          f"{costs['train_pairs_per_s']:,.0f} pairs/s (fit wall time {costs['train_seconds']:.1f} s), "
          f"encode {costs['encode_items_per_s']:,.0f} items/s, {costs['params']:,} parameters")


if __name__ == "__main__":
    main()
