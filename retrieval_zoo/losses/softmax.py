"""In-batch sampled softmax with temperature: the retrieval loss every model here starts from.

Each query's positive competes with the other queries' positives in the batch (gathered across DDP ranks, as
open_clip's ClipLoss does) and, optionally, with ``random_items`` sampled from the catalogue (mixed negatives,
Yang et al., WWW 2020). Logits are inner products divided by the temperature tau: with unnormalised vectors a
large tau smooths noisy click labels (MGDSPR, Li et al. KDD 2021, uses tau = 2); with normalised vectors a small
tau (~0.05) sharpens cosine similarities. A batch item identical to a query's own positive is masked, so a
repeated popular item is never its own negative (nor, in ``data.group_by_unit`` batches, the same search's
other positives).

Inputs: query vectors [B, d], positive item vectors [B, d], the batch (``pos_item``; ``random_items`` when the
data config asks for sampled negatives), and the RetrievalModule (to encode sampled items).

Example::

    loss = InBatchSoftmaxLoss(temperature=0.05)
    value = loss(q, p, {"pos_item": torch.arange(len(q))}, module)["loss"]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrieval_zoo.distributed import gather_indices, gather_with_grad, world


def in_batch_logits(queries: torch.Tensor, positives: torch.Tensor, pos_item: torch.Tensor,
                    extra_items: torch.Tensor | None = None,
                    pair_unit: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of each local query against every rank's positives (+ extra items), and the target columns.

    Columns of other queries' positives that are the same catalogue item as the row's own positive get -inf,
    and so do, given ``pair_unit`` (each row's unit; ``data.group_by_unit`` batches), the other positives of
    the row's own unit: they are items the same search engaged with, not negatives.
    """
    rank, _ = world()
    all_positives = gather_with_grad(positives)
    all_ids = gather_indices(pos_item)
    targets = torch.arange(len(queries), device=queries.device) + rank * len(queries)
    logits = queries @ all_positives.T
    duplicate = pos_item[:, None] == all_ids[None, :]
    if pair_unit is not None:
        duplicate |= pair_unit[:, None] == gather_indices(pair_unit)[None, :]
    duplicate[torch.arange(len(queries)), targets] = False
    logits = logits.masked_fill(duplicate, float("-inf"))
    if extra_items is not None:
        logits = torch.cat([logits, queries @ extra_items.T], dim=1)
    return logits, targets


def sampled_negatives(batch: dict[str, torch.Tensor], module, use_random_negatives: bool) -> torch.Tensor | None:
    """The vectors of the batch's sampled catalogue items (``random_items``), when asked for and present."""
    if use_random_negatives and "random_items" in batch:
        return module.encode_item_indices(batch["random_items"])
    return None


def batch_logits(queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor], module,
                 use_random_negatives: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``in_batch_logits`` with the batch's sampled ``random_items`` appended when asked for and present."""
    extra = sampled_negatives(batch, module, use_random_negatives)
    return in_batch_logits(queries, positives, batch["pos_item"], extra, batch.get("pair_unit"))


def softmax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.cross_entropy(logits / temperature, targets)


class InBatchSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over in-batch (+ sampled random) negatives with temperature ``temperature``."""

    def __init__(self, temperature: float = 1.0, use_random_negatives: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.use_random_negatives = use_random_negatives

    def forward(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                module) -> dict[str, torch.Tensor]:
        logits, targets = batch_logits(queries, positives, batch, module, self.use_random_negatives)
        return {"loss": softmax_cross_entropy(logits, targets, self.temperature)}
