"""DDP on CPU (gloo, 2 processes): in-batch negatives are gathered across ranks, and Lightning trains with it."""

from __future__ import annotations

import math
import os
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from retrieval_zoo.losses.softmax import in_batch_logits

WORLD = 2
BATCH = 3
DIM = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _full_tensors():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(WORLD * BATCH, DIM, generator=generator)
    positives = torch.randn(WORLD * BATCH, DIM, generator=generator)
    item_ids = torch.arange(WORLD * BATCH)
    item_ids[4] = 1  # rank 1's second positive is the same item as rank 0's second: must be masked
    return queries, positives, item_ids


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    queries, positives, item_ids = _full_tensors()
    local = slice(rank * BATCH, (rank + 1) * BATCH)
    q = queries[local].clone().requires_grad_(True)
    p = positives[local].clone().requires_grad_(True)
    logits, targets = in_batch_logits(q, p, item_ids[local])
    F.cross_entropy(logits, targets).backward()
    results[rank] = (logits.detach(), targets, p.grad.clone())
    dist.destroy_process_group()


def test_negatives_are_gathered_across_ranks_with_gradients():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
    queries, positives, item_ids = _full_tensors()
    # reference: the same two per-rank losses computed in one process over the full batch
    p = positives.clone().requires_grad_(True)
    logits = queries @ p.T
    duplicate = item_ids[:, None] == item_ids[None, :]
    duplicate.fill_diagonal_(False)
    logits = logits.masked_fill(duplicate, float("-inf"))
    targets = torch.arange(WORLD * BATCH)
    total = sum(F.cross_entropy(logits[r * BATCH:(r + 1) * BATCH], targets[r * BATCH:(r + 1) * BATCH])
                for r in range(WORLD))
    total.backward()
    for rank in range(WORLD):
        rank_logits, rank_targets, rank_grad = results[rank]
        assert rank_logits.shape == (BATCH, WORLD * BATCH)  # every rank's positives are negatives
        torch.testing.assert_close(rank_logits, logits[rank * BATCH:(rank + 1) * BATCH].detach())
        assert rank_targets.tolist() == list(range(rank * BATCH, (rank + 1) * BATCH))
        # the gradient reaches the rank that produced the items, from the other rank's queries too
        torch.testing.assert_close(rank_grad, p.grad[rank * BATCH:(rank + 1) * BATCH])
    assert math.isinf(results[1][0][1, 1].item())  # the duplicate item is masked on rank 1


CATALOGUE = 7  # not a multiple of the world size: the shares differ by one


class _StubModule:
    """Just what ``RetrievalModule.encode_catalog`` uses: a catalogue length, the model's encoding order and an
    item-rows encoder."""

    name = "stub"
    catalog = range(CATALOGUE)

    def __init__(self, order: list[int] | None):
        self.encoded: list[int] = []
        self.model = SimpleNamespace(catalogue_order=lambda catalog: None if order is None else np.array(order))

    def eval(self):
        return self

    def _encode_item_rows(self, rows: torch.Tensor) -> torch.Tensor:
        self.encoded.extend(rows.tolist())
        return rows.float()[:, None] * torch.tensor([1.0, -1.0, 0.5])


def _encode_worker(rank: int, port: int, results, order) -> None:
    from retrieval_zoo.models.base import RetrievalModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    stub = _StubModule(order)
    vectors = RetrievalModule.encode_catalog(stub, batch_size=2, progress=False)
    results[rank] = (vectors, stub.encoded)
    dist.destroy_process_group()


# None: catalogue order; a permutation: a model's own order (e.g. by text length), undone after the gather
@pytest.mark.parametrize("order, shares", [(None, ([0, 1, 2, 3], [4, 5, 6])),
                                           ([6, 2, 4, 0, 1, 5, 3], ([6, 2, 4, 0], [1, 5, 3]))])
def test_catalogue_encoding_is_sharded_per_rank_and_gathered(order, shares):
    results = mp.Manager().dict()
    mp.spawn(_encode_worker, args=(_free_port(), results, order), nprocs=WORLD, join=True)
    expected = (torch.arange(CATALOGUE, dtype=torch.float32)[:, None] * torch.tensor([1.0, -1.0, 0.5])).numpy()
    assert (results[0][1], results[1][1]) == shares  # each rank encodes only its share
    for rank in range(WORLD):
        assert (results[rank][0] == expected).all()  # and every rank ends with the whole catalogue, in order


@pytest.mark.slow
@pytest.mark.parametrize("group_by_unit", [False, True])  # True: Lightning re-shards the grouping sampler
def test_lightning_ddp_training_on_cpu(tmp_path, group_by_unit):
    import retrieval_zoo as rz

    [result] = rz.run_benchmark(
        "light_two_tower", "simshop-tiny", seeds=1, results_dir=tmp_path, wandb="disabled", progress=False,
        print_table=False,
        overrides=["trainer.devices=2", "trainer.strategy=ddp_spawn", "trainer.accelerator=cpu",
                   "trainer.max_steps=2", "trainer.limit_val_batches=0", f"data.group_by_unit={group_by_unit}"],
    )
    assert result.costs["train_seconds"] > 0
    assert math.isfinite(result.metrics["ndcg@10"])
