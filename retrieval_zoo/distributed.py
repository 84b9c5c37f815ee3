"""Cross-rank helpers for in-batch negatives under Lightning's DDP strategy (as open_clip's ClipLoss does)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, keeping gradients for the local part.

    ``torch.distributed.nn.all_gather`` back-propagates through the collective, so every rank's items act as
    negatives for every rank's queries and the gradient still reaches the rank that produced them.
    """
    rank, size = world()
    if size == 1:
        return tensor
    import torch.distributed.nn

    return torch.cat(torch.distributed.nn.all_gather(tensor), dim=0)


def gather_indices(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate an integer tensor (e.g. item ids, for masking duplicate positives) from every rank."""
    rank, size = world()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def shard(n: int) -> range:
    """This rank's contiguous share of ``range(n)`` (ranks differ in size by at most one)."""
    rank, size = world()
    per_rank, extra = divmod(n, size)
    start = rank * per_rank + min(rank, extra)
    return range(start, start + per_rank + (rank < extra))


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's ``shard(n)`` rows, in order, on every rank (all_gather needs equal shapes: pad, then trim)."""
    rank, size = world()
    if size == 1:
        return local
    longest = -(-n // size)
    padded = torch.zeros(longest, *local.shape[1:], dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    sizes = [n // size + (r < n % size) for r in range(size)]
    return torch.cat([part[:length] for part, length in zip(parts, sizes, strict=True)])
