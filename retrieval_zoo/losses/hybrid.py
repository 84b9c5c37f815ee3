"""Hybrid loss of MRSE (Shopee, arXiv 2408.14968): softmax with mixed negatives + a hard-negative triplet term.

MRSE trains with "softmax cross-entropy with mixed negatives plus a hard-negative triplet loss, for consistency
and robustness". The two parts play different roles: the softmax ranks the positive above *many* negatives (the
other queries' positives in the batch and items sampled from the whole catalogue, Yang et al. WWW 2020), the
triplet term insists on a *margin* against the single most confusable negative, which the softmax, averaged over
hundreds of easy negatives, barely feels.

    loss = softmax_weight * CE(logits / temperature) + triplet_weight * mean_i max(0, margin + d(q_i, p_i) - d(q_i, n_i))

- the softmax part is ``losses/softmax.py`` as is (``in_batch_logits``: in-batch, gathered across DDP ranks,
  duplicates of the positive masked; ``random_items`` appended when the batch has them);
- the hard negative n_i (the paper does not publish its mining rule; this is the assumption, in the config):
  with the ``stages`` field in the batch, the closest of the query's own *unclicked* items (level 1: exposed but
  not clicked; on label-only data judged Complement or Irrelevant); otherwise the closest in-batch item that is
  not the query's positive and, with ``skip_same_query``, not the positive of another row with the same query
  text (those are mostly relevant too), sampled ``random_items`` and the row's own mined ``hard_items``
  included. A row without any candidate adds nothing to the triplet mean;
- d is the cosine distance ``1 - cos`` (or ``euclidean``: the L2 distance).

Mined hard negatives (``hard_items``, data/negatives.py; ``use_hard_negatives``, default true) join the softmax
as row-specific columns (``losses/softmax.py``) and the in-batch triplet candidates as above; ``pos_weight``
(graded positives) makes the softmax part a weighted mean (the triplet mean stays unweighted).

Inputs: query vectors [B, d], positive item vectors [B, d], the batch (``pos_item``; optional ``random_items``,
``stage_items`` / ``stage_levels``, ``query_tokens``, ``hard_items``, ``pos_weight``), and ``ItemVectors``: the
sampled, hard and stage candidates' vectors, as ``extra_vectors`` asks the training module to encode them.
Returns ``{"loss", "softmax", "triplet"}``. ``softmax_only`` is ``triplet_weight: 0`` (no stage item encoded).

Example::

    loss = HybridLoss(temperature=0.05, margin=0.2, triplet_weight=0.5)
    parts = loss(q, p, {"pos_item": torch.arange(len(q))})   # parts["loss"], parts["triplet"]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from retrieval_zoo.losses.softmax import (
    Encoder,
    ItemVectors,
    batch_logits,
    random_and_hard_vectors,
    softmax_cross_entropy,
)

UNCLICKED_LEVEL = 1  # stages.py: exposed-but-not-clicked (behaviour) or judged C/I (labels)
DISTANCES = ("cosine", "euclidean")


def pairwise_distance(queries: torch.Tensor, items: torch.Tensor, distance: str) -> torch.Tensor:
    """Distances between matching rows: queries [B, d] and items [B, d] -> [B]; items [B, K, d] -> [B, K]."""
    if items.dim() == 3:
        queries = queries.unsqueeze(1)
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(queries, items, dim=-1)
    return (queries - items).pow(2).sum(-1).clamp(min=1e-12).sqrt()


def distance_matrix(queries: torch.Tensor, items: torch.Tensor, distance: str) -> torch.Tensor:
    """All distances between queries [B, d] and items [K, d] -> [B, K]."""
    if distance == "cosine":
        return 1.0 - F.normalize(queries, dim=-1) @ F.normalize(items, dim=-1).T
    return torch.cdist(queries, items)


def triplet_term(anchor_positive: torch.Tensor, anchor_negative: torch.Tensor, valid: torch.Tensor,
                 margin: float) -> torch.Tensor:
    """Mean hinge max(0, margin + d(q, p) - d(q, n)) over the rows that have a negative (0 when none has)."""
    hinge = F.relu(margin + anchor_positive - anchor_negative)
    return (hinge * valid).sum() / valid.sum().clamp(min=1)


def hardest_index(distances: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the column with the smallest distance among ``allowed`` ones, and whether any was allowed."""
    masked = distances.masked_fill(~allowed, float("inf"))
    return masked.argmin(dim=1), allowed.any(dim=1)


def in_batch_candidates(batch: dict[str, torch.Tensor], skip_same_query: bool) -> torch.Tensor:
    """[B, B] mask of the batch positives that may serve as row i's negative."""
    pos_item = batch["pos_item"]
    allowed = pos_item[:, None] != pos_item[None, :]  # also removes the diagonal
    if skip_same_query and "query_tokens" in batch:
        tokens = batch["query_tokens"]
        same_query = (tokens[:, None, :] == tokens[None, :, :]).all(-1)
        allowed &= ~same_query
    return allowed


def stage_candidates(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, S] mask of the ``stage_items`` that may be the row's stage negative: the query's own unclicked items
    (level 1) other than its positive."""
    return (batch["stage_levels"] == UNCLICKED_LEVEL) & (batch["stage_items"] != batch["pos_item"][:, None])


class HybridLoss(nn.Module):
    """Softmax with mixed negatives + weighted hard-negative triplet term (see the module docstring).

    ``use_random_negatives`` / ``use_hard_negatives`` (default true): take the batch's ``random_items`` /
    mined ``hard_items`` as extra softmax negatives and in-batch triplet candidates when present.
    """

    def __init__(self, temperature: float = 0.05, use_random_negatives: bool = True, softmax_weight: float = 1.0,
                 triplet_weight: float = 0.5, margin: float = 0.2, distance: str = "cosine",
                 skip_same_query: bool = True, use_hard_negatives: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance '{distance}'; valid distances: {', '.join(DISTANCES)}")
        self.temperature = temperature
        self.use_random_negatives = use_random_negatives
        self.use_hard_negatives = use_hard_negatives
        self.softmax_weight = softmax_weight
        self.triplet_weight = triplet_weight
        self.margin = margin
        self.distance = distance
        self.skip_same_query = skip_same_query

    def extra_vectors(self, batch: dict[str, torch.Tensor], encode: Encoder,
                      encode_heads: Callable[[], torch.Tensor] | None = None) -> ItemVectors:
        """The sampled and hard items (softmax columns and triplet candidates) and, for the triplet with the
        ``stages`` field, the stage lists' unclicked candidates (``stage_candidates``)."""
        extra = random_and_hard_vectors(batch, encode, self.use_random_negatives, self.use_hard_negatives)
        if self.triplet_weight > 0 and "stage_items" in batch:
            # encode each distinct candidate once (lists overlap, and most slots are not candidates)
            candidates = batch["stage_items"].masked_fill(~stage_candidates(batch), -1)
            distinct, position = candidates.unique(return_inverse=True)
            extra.stage = encode(distinct)[position]  # [B, S, d]; -1 slots are masked by the triplet
        return extra

    def forward(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                extra: ItemVectors | None = None) -> dict[str, torch.Tensor]:
        extra = extra or ItemVectors()  # the sampled and hard vectors serve the softmax and the triplet
        logits, targets = batch_logits(queries, positives, batch, extra)
        softmax = softmax_cross_entropy(logits, targets, self.temperature, batch.get("pos_weight"))
        triplet = queries.new_zeros(())
        if self.triplet_weight > 0:
            triplet = self.triplet(queries, positives, batch, extra)
        loss = self.softmax_weight * softmax + self.triplet_weight * triplet
        return {"loss": loss, "softmax": softmax.detach(), "triplet": triplet.detach()}

    def triplet(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                extra: ItemVectors | None = None) -> torch.Tensor:
        """The triplet term; ``extra.stage`` (the ``stage_candidates`` vectors) is needed with ``stage_items``."""
        extra = extra or ItemVectors()
        anchor_positive = pairwise_distance(queries, positives, self.distance)
        if "stage_items" in batch:
            negatives, valid = self._stage_negatives(queries, batch, extra.stage)
        else:
            negatives, valid = self._in_batch_negatives(queries, positives, batch, extra.random, extra.hard)
        anchor_negative = pairwise_distance(queries, negatives, self.distance)
        return triplet_term(anchor_positive, anchor_negative, valid.to(queries.dtype), self.margin)

    def _in_batch_negatives(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                            random_vectors: torch.Tensor | None,
                            hard_vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        candidates = positives
        allowed = in_batch_candidates(batch, self.skip_same_query)
        if random_vectors is not None:
            candidates = torch.cat([positives, random_vectors])
            is_positive = batch["random_items"][None, :] == batch["pos_item"][:, None]
            allowed = torch.cat([allowed, ~is_positive], dim=1)
        # the hardest negative is chosen without gradient; the hinge then trains through its vector
        with torch.no_grad():
            distances = distance_matrix(queries, candidates, self.distance)
            if hard_vectors is not None:  # row i's own hard items, as columns after the shared candidates
                hard = batch["hard_items"]
                distances = torch.cat([distances, pairwise_distance(queries, hard_vectors, self.distance)], dim=1)
                allowed = torch.cat([allowed, (hard >= 0) & (hard != batch["pos_item"][:, None])], dim=1)
        index, valid = hardest_index(distances, allowed)
        chosen = candidates[index.clamp(max=len(candidates) - 1)]
        if hard_vectors is not None:
            rows = torch.arange(len(queries), device=queries.device)
            from_hard = hard_vectors[rows, (index - len(candidates)).clamp(min=0)]
            chosen = torch.where((index >= len(candidates))[:, None], from_hard, chosen)
        return chosen, valid

    def _stage_negatives(self, queries: torch.Tensor, batch: dict[str, torch.Tensor],
                         vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        allowed = stage_candidates(batch)
        with torch.no_grad():
            distances = pairwise_distance(queries, vectors, self.distance)
        index, valid = hardest_index(distances, allowed)
        return vectors[torch.arange(len(queries), device=queries.device), index], valid
