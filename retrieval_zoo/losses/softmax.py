"""In-batch sampled softmax with temperature: the retrieval loss every model here starts from.

Each query's positive competes with the other queries' positives in the batch (gathered across DDP ranks, as
open_clip's ClipLoss does) and, optionally, with ``random_items`` sampled from the catalogue (mixed negatives,
Yang et al., WWW 2020). Logits are inner products divided by the temperature tau: with unnormalised vectors a
large tau smooths noisy click labels (MGDSPR, Li et al. KDD 2021, uses tau = 2); with normalised vectors a small
tau (~0.05) sharpens cosine similarities. A batch item identical to a query's own positive is masked, so a
repeated popular item is never its own negative (nor, in ``data.group_by_unit`` batches, the same search's
other positives).

Two batch keys of the data module (retrieval_zoo/data/datamodule.py) refine this, each only when present:

- ``hard_items`` int64 [B, K]: each row's mined hard negatives (data/negatives.py), scored against that row's
  query only and appended as K extra columns (q_i . h_ij); -1 padding and a hard item equal to the row's own
  positive get -inf. In-batch negatives are mostly easy, and the softmax barely learns from them late in
  training; the mined items are the ones a lexical or pretrained model confuses with the positive.
  ``use_hard_negatives: false`` on a loss ignores them (nothing extra is encoded).
- ``pos_weight`` float [B]: graded positives (E 1.0, S 0.5 by default). The cross-entropy becomes the weighted
  mean sum_i(w_i * ce_i) / sum_i(w_i), so a substitute pulls its query half as hard as an exact match. Under DDP
  each rank takes its own weighted mean (the gradients are then averaged over ranks, as for the plain mean).

Without either key every value is bit-identical to the plain in-batch softmax.

Inputs: query vectors [B, d], positive item vectors [B, d], the batch (``pos_item``; ``random_items`` when the
data config asks for sampled negatives; optional ``hard_items``, ``pos_weight``), and the RetrievalModule (to
encode sampled items).

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
    and so do, given ``pair_unit`` (each row's unit, in every training batch), the other positives of the
    row's own unit: items the same search engaged with (or judged E/S for the same query), not negatives.
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


def encode_unique(module, index_sets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Item vectors for several index tensors (any shape, -1 allowed), encoding each distinct item once."""
    flat = [indices.reshape(-1).clamp(min=0) for indices in index_sets]
    unique, inverse = torch.unique(torch.cat(flat), return_inverse=True)
    vectors = module.encode_item_indices(unique)[inverse]
    parts = vectors.split([len(f) for f in flat])
    return [part.reshape(*indices.shape, -1) for part, indices in zip(parts, index_sets, strict=True)]


def sampled_negatives(batch: dict[str, torch.Tensor], module, use_random_negatives: bool) -> torch.Tensor | None:
    """The vectors of the batch's sampled catalogue items (``random_items``), when asked for and present."""
    if use_random_negatives and "random_items" in batch:
        return module.encode_item_indices(batch["random_items"])
    return None


def has_hard_negatives(batch: dict[str, torch.Tensor], use_hard_negatives: bool) -> bool:
    return use_hard_negatives and "hard_items" in batch and batch["hard_items"].numel() > 0


def hard_negative_vectors(batch: dict[str, torch.Tensor], module, use_hard_negatives: bool) -> torch.Tensor | None:
    """Vectors [B, K, d] of the rows' mined ``hard_items`` (each distinct item encoded once), when asked for and
    present; padding (-1) encodes item 0 and is masked by ``append_hard_logits``."""
    if not has_hard_negatives(batch, use_hard_negatives):
        return None
    return encode_unique(module, [batch["hard_items"]])[0]


def append_hard_logits(logits: torch.Tensor, queries: torch.Tensor, hard_vectors: torch.Tensor | None,
                       batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``logits`` [B, C] with each row's hard-negative scores q_i . h_ij appended as K columns (-inf: padding
    or the row's own positive); ``logits`` unchanged when there are no hard vectors."""
    if hard_vectors is None:
        return logits
    hard = batch["hard_items"]
    scores = torch.einsum("bd,bkd->bk", queries, hard_vectors.to(queries.dtype))
    invalid = (hard < 0) | (hard == batch["pos_item"][:, None])
    return torch.cat([logits, scores.masked_fill(invalid, float("-inf"))], dim=1)


def batch_logits(queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor], module,
                 use_random_negatives: bool, use_hard_negatives: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``in_batch_logits`` with the batch's sampled ``random_items`` and then its rows' ``hard_items`` appended,
    each when asked for and present."""
    extra = sampled_negatives(batch, module, use_random_negatives)
    logits, targets = in_batch_logits(queries, positives, batch["pos_item"], extra, batch.get("pair_unit"))
    hard = hard_negative_vectors(batch, module, use_hard_negatives)
    return append_hard_logits(logits, queries, hard, batch), targets


def softmax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``logits / temperature``; given ``weights`` [B], the weighted mean
    sum(w_i * ce_i) / sum(w_i) (graded positives)."""
    if weights is None:
        return F.cross_entropy(logits / temperature, targets)
    per_row = F.cross_entropy(logits / temperature, targets, reduction="none")
    weights = weights.to(per_row.dtype)
    return (weights * per_row).sum() / weights.sum()


class InBatchSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over in-batch (+ sampled random, + mined hard) negatives with temperature
    ``temperature``, weighted by ``pos_weight`` when the batch has it.

    ``use_random_negatives`` / ``use_hard_negatives`` (default true): take the batch's ``random_items`` /
    ``hard_items`` as extra negatives when present.
    """

    def __init__(self, temperature: float = 1.0, use_random_negatives: bool = True, use_hard_negatives: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.use_random_negatives = use_random_negatives
        self.use_hard_negatives = use_hard_negatives

    def forward(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                module) -> dict[str, torch.Tensor]:
        logits, targets = batch_logits(queries, positives, batch, module, self.use_random_negatives,
                                       self.use_hard_negatives)
        return {"loss": softmax_cross_entropy(logits, targets, self.temperature, batch.get("pos_weight"))}
