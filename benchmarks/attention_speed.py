"""Training-step time of the shared Transformer layers: PackedSelfAttention vs torch's nn.MultiheadAttention.

The models' light Transformers (``retrieval_zoo/models/layers.py``: MRSE's Light-BERT and VBert, MMSE's and
MGDSPR's text encoders) train with ``PackedSelfAttention``, which differs from torch's self-attention only in how
the packed q/k/v projection is split (one ``unbind`` instead of three ``select``s, whose backward each fills a
zero tensor the size of the whole projection). This times forward + backward of the same encoder, same weights,
same batch, both ways, alternating, and prints the median of each and the ratio; it also checks the outputs and
gradients are bitwise equal. Default shape: one MRSE step on ESCI-length texts (512 queries + 512 positives +
2,048 mined + 128 sampled items, 64 tokens, width 64, 2 heads, 2 layers, GELU, pre-norm).

    python benchmarks/attention_speed.py [--rows 3200] [--length 64] [--width 64] [--heads 2] [--layers 2]
                                         [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from retrieval_zoo.models.layers import transformer_encoder


def step_seconds(encoder: nn.Module, x: torch.Tensor, padding: torch.Tensor) -> tuple[float, torch.Tensor]:
    inputs = x.clone().requires_grad_(True)
    started = time.perf_counter()
    out = encoder(inputs, src_key_padding_mask=padding)
    out.square().mean().backward()
    return time.perf_counter() - started, inputs.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3200)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = transformer_encoder(args.width, args.heads, args.layers, 2 * args.width, activation="gelu",
                               final_norm=True).train()
    theirs = copy.deepcopy(ours)
    for layer in theirs.layers:
        layer.self_attn.__class__ = nn.MultiheadAttention
    x = torch.randn(args.rows, args.length, args.width)
    lengths = torch.randint(1, args.length + 1, (args.rows,))
    padding = torch.arange(args.length)[None, :] >= lengths[:, None]
    times: dict[str, list[float]] = {"packed (ours)": [], "torch MultiheadAttention": []}
    grads = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is dropped
        for name, encoder in (("packed (ours)", ours), ("torch MultiheadAttention", theirs)):
            encoder.zero_grad(set_to_none=True)
            seconds, grads[name] = step_seconds(encoder, x, padding)
            times[name].append(seconds)
    same = torch.equal(*grads.values()) and all(
        torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True))
    medians = {name: statistics.median(values[1:]) for name, values in times.items()}
    print(f"forward + backward, {args.rows} x {args.length} tokens, width {args.width}, {args.heads} heads, "
          f"{args.layers} layers, {args.threads} threads, median of {args.repeats}:")
    for name, seconds in medians.items():
        print(f"  {name:26s} {seconds:.3f} s")
    print(f"  ratio (ours / torch's)     {medians['packed (ours)'] / medians['torch MultiheadAttention']:.2f}x; "
          f"gradients bitwise equal: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
