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

Inputs: query vectors [B, d], positive item vectors [B, d], the batch's index and weight tensors (``pos_item``;
``random_items`` when the data config asks for sampled negatives; optional ``hard_items``, ``pair_unit``,
``pos_weight``) and ``ItemVectors``: the vectors of the sampled and hard items. A loss never encodes anything
itself (as sentence-transformers' and open_clip's losses take embeddings): the training module asks it which
items it wants (``extra_vectors``, given the module's item encoder), encodes them, and passes the vectors in.

Example::

    loss = InBatchSoftmaxLoss(temperature=0.05)
    value = loss(q, p, {"pos_item": torch.arange(len(q))})["loss"]
    batch = {"pos_item": pos_item, "random_items": random_items}
    value = loss(q, p, batch, ItemVectors(random=item_vectors[random_items]))["loss"]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


Encoder = Callable[[torch.Tensor], torch.Tensor]  # catalogue indices (any shape; -1 encodes item 0) -> vectors


@dataclass
class ItemVectors:
    """Vectors a loss gets besides the queries and positives; None where it did not ask or the batch lacks them.

    ``random`` [R, d]: ``batch["random_items"]``; ``hard`` [B, K, d]: ``batch["hard_items"]`` (-1 padding
    encodes item 0, masked by the loss); ``stage`` [B, S, d]: ``batch["stage_items"]`` (which slots are real is
    the loss's business); ``heads`` [B, H, d]: each query head's own vector (MMSE), one row per example.
    """

    random: torch.Tensor | None = None
    hard: torch.Tensor | None = None
    stage: torch.Tensor | None = None
    heads: torch.Tensor | None = None


def encode_unique(encode: Encoder, index_sets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Item vectors for several index tensors (any shape, -1 allowed), encoding each distinct item once."""
    flat = [indices.reshape(-1).clamp(min=0) for indices in index_sets]
    unique, inverse = torch.unique(torch.cat(flat), return_inverse=True)
    vectors = encode(unique)[inverse]
    parts = vectors.split([len(f) for f in flat])
    return [part.reshape(*indices.shape, -1) for part, indices in zip(parts, index_sets, strict=True)]


def sampled_negatives(batch: dict[str, torch.Tensor], encode: Encoder,
                      use_random_negatives: bool) -> torch.Tensor | None:
    """The vectors of the batch's sampled catalogue items (``random_items``), when asked for and present."""
    if use_random_negatives and "random_items" in batch:
        return encode(batch["random_items"])
    return None


def has_hard_negatives(batch: dict[str, torch.Tensor], use_hard_negatives: bool) -> bool:
    return use_hard_negatives and "hard_items" in batch and batch["hard_items"].numel() > 0


def hard_negative_vectors(batch: dict[str, torch.Tensor], encode: Encoder,
                          use_hard_negatives: bool) -> torch.Tensor | None:
    """Vectors [B, K, d] of the rows' mined ``hard_items`` (each distinct item encoded once), when asked for and
    present; padding (-1) encodes item 0 and is masked by ``append_hard_logits``."""
    if not has_hard_negatives(batch, use_hard_negatives):
        return None
    return encode_unique(encode, [batch["hard_items"]])[0]


def random_and_hard_vectors(batch: dict[str, torch.Tensor], encode: Encoder, use_random_negatives: bool,
                            use_hard_negatives: bool) -> ItemVectors:
    """The sampled ``random_items`` and then the mined ``hard_items``, each encoded when asked for and present."""
    return ItemVectors(random=sampled_negatives(batch, encode, use_random_negatives),
                       hard=hard_negative_vectors(batch, encode, use_hard_negatives))


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


def batch_logits(queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                 extra: ItemVectors | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``in_batch_logits`` with the sampled items' and then the rows' hard items' columns appended, where
    ``extra`` has their vectors."""
    extra = extra or ItemVectors()
    logits, targets = in_batch_logits(queries, positives, batch["pos_item"], extra.random, batch.get("pair_unit"))
    return append_hard_logits(logits, queries, extra.hard, batch), targets


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

    def extra_vectors(self, batch: dict[str, torch.Tensor], encode: Encoder,
                      encode_heads: Callable[[], torch.Tensor] | None = None) -> ItemVectors:
        """The vectors this loss takes besides queries and positives, encoded with ``encode``."""
        return random_and_hard_vectors(batch, encode, self.use_random_negatives, self.use_hard_negatives)

    def forward(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                extra: ItemVectors | None = None) -> dict[str, torch.Tensor]:
        logits, targets = batch_logits(queries, positives, batch, extra)
        return {"loss": softmax_cross_entropy(logits, targets, self.temperature, batch.get("pos_weight"))}
