"""MMSE's multi-grained objective: global retrieval loss + beta x local stage ranking loss.

Wang et al., "Learning Multi-Stage Multi-Grained Semantic Embeddings for E-Commerce Search", WWW 2023
companion (JD.com, arXiv 2303.11009). The abstract names two objectives: a retrieval loss with *global* comparison ability and a ranking loss with *local* comparison ability.

- Retrieval (global): softmax cross-entropy of each (query, clicked-or-ordered item) against the other
  queries' positives and ``random_items`` sampled from the catalogue: ``losses/softmax.py``'s
  ``in_batch_logits`` (DDP-gathered, duplicates of the row's positive masked). Here a sampled random item
  that *is* the row's positive is masked too (softmax.py leaves that case unmasked).
- Ranking (local): ``StageRankingLoss`` (``losses/stage_ranking.py``) over the query's stage list
  (``stage_items`` / ``stage_levels``: ordered > clicked > unclicked > random) scored by the same inner product.
  A random (level 0) item that also appears in the row at a higher level is dropped: uniform sampling can hit
  the query's own clicked item, and a pair "clicked item above itself" teaches nothing but noise.

``L = L_retrieval + beta * L_rank``; ``beta = 0`` is the ``retrieval_only`` ablation (stage items are then not
encoded at all). Random, stage and hard items are encoded once, over their unique catalogue indices.

The retrieval part also takes the rows' mined ``hard_items`` (data/negatives.py) as extra per-row columns
(``losses/softmax.py``'s ``append_hard_logits``; ``use_hard_negatives``, default true) and is a weighted mean by
``pos_weight`` (graded positives) when the batch has it; the ranking part is unchanged.

Cost: the level-0 items of the stage lists are fresh uniform draws per query (``data.stage_random_items``),
which on a small catalogue means encoding a good part of it every step. ``shared_randoms_per_query = k``
instead appends, to every list, k of the batch's ``random_items`` (already encoded for the softmax) at level 0:
the same kind of signal (uniformly sampled items) at no extra encoding cost; use it with
``data.stage_random_items: 0``.

``head_weight > 0`` adds each query head's own retrieval loss (same positives and negatives), averaged over the
heads, so that every granularity is a retriever on its own and not only a part of the fused score (an
assumption: the paper names only the two objectives; off by default).

Inputs: query vectors [B, d], positive vectors [B, d], the batch's index tensors (``pos_item``, ``random_items``,
``stage_items``, ``stage_levels``, optional ``hard_items``, ``pair_unit``, ``pos_weight``) and ``ItemVectors``
(random, stage and hard items, and with ``head_weight`` the query heads' own vectors), which the training
module encodes as ``extra_vectors`` asks.
Returns ``{"loss", "retrieval", "ranking"}`` (+ ``"per_head"`` when ``head_weight > 0``).

Example::

    loss = MultiGrainedLoss(temperature=0.05, beta=1.0, ranking={"mode": "listwise"})
    extra = loss.extra_vectors(batch, encode_items)  # the training module's encoder (RetrievalModule)
    parts = loss(q, p, batch, extra)   # batch with pos_item, random_items, stage_items, stage_levels
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from retrieval_zoo.losses.softmax import (
    Encoder,
    ItemVectors,
    append_hard_logits,
    encode_unique,
    has_hard_negatives,
    in_batch_logits,
    softmax_cross_entropy,
)
from retrieval_zoo.losses.stage_ranking import StageRankingLoss


def drop_conflicting_randoms(items: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Levels with a random (level 0) item set to -1 where the same item is in the row at a higher level."""
    same = items[:, :, None] == items[:, None, :]                       # [B, S, S]
    higher = (levels[:, None, :] > 0) & same
    conflict = (levels == 0) & higher.any(-1)
    return levels.masked_fill(conflict, -1)


class MultiGrainedLoss(nn.Module):
    """Retrieval (in-batch + random + hard softmax) + ``beta`` x stage ranking loss (see the module docstring).

    ``use_random_negatives`` / ``use_hard_negatives`` (default true): the retrieval part takes the batch's
    ``random_items`` / mined ``hard_items`` as extra negatives when present.
    """

    def __init__(self, temperature: float = 0.05, use_random_negatives: bool = True, beta: float = 1.0,
                 shared_randoms_per_query: int = 0, ranking: dict[str, Any] | None = None,
                 head_weight: float = 0.0, use_hard_negatives: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if beta < 0 or head_weight < 0:
            raise ValueError(f"beta and head_weight must be >= 0, got {beta} and {head_weight}")
        self.temperature = temperature
        self.use_random_negatives = use_random_negatives
        self.use_hard_negatives = use_hard_negatives
        self.beta = beta
        self.head_weight = head_weight
        self.shared_randoms_per_query = shared_randoms_per_query
        self.ranking = StageRankingLoss(**(ranking or {}))

    def extra_vectors(self, batch: dict[str, torch.Tensor], encode: Encoder,
                      encode_heads: Callable[[], torch.Tensor] | None = None) -> ItemVectors:
        """Random, stage and hard items, each distinct item encoded once over all three; with ``head_weight``
        the query heads' own vectors (``encode_heads``: one row per example, [B, H, d])."""
        use_random = self.use_random_negatives and "random_items" in batch
        use_stages = self.beta > 0
        if use_stages and "stage_items" not in batch:
            raise ValueError("the stage ranking loss needs stage_items / stage_levels: the model must require "
                             "the 'stages' field (see retrieval_zoo/data/datamodule.py)")
        use_hard = has_hard_negatives(batch, self.use_hard_negatives)
        wanted = ([batch["random_items"]] if use_random else []) + ([batch["stage_items"]] if use_stages else [])
        wanted += [batch["hard_items"]] if use_hard else []
        encoded = encode_unique(encode, wanted) if wanted else []
        extra = ItemVectors(random=encoded.pop(0) if use_random else None,
                            hard=encoded.pop() if use_hard else None, stage=encoded.pop() if use_stages else None)
        if self.head_weight > 0:
            if encode_heads is None:
                raise ValueError("loss.head_weight > 0 needs a model with several query heads (MMSE); set it to 0")
            extra.heads = encode_heads()
        return extra

    def forward(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                extra: ItemVectors | None = None) -> dict[str, torch.Tensor]:
        extra = extra or ItemVectors()
        if self.beta > 0 and extra.stage is None:
            raise ValueError("the stage ranking loss needs the stage items' vectors (ItemVectors.stage)")
        random_vectors, hard_vectors = extra.random, extra.hard
        retrieval = self.retrieval_loss(queries, positives, batch, random_vectors, hard_vectors)
        if self.beta > 0:
            items, levels, vectors = batch["stage_items"], batch["stage_levels"], extra.stage
            if self.shared_randoms_per_query and random_vectors is not None:
                items, levels, vectors = self.with_shared_randoms(items, levels, vectors, batch["random_items"],
                                                                  random_vectors)
            scores = torch.einsum("bd,bsd->bs", queries, vectors)
            ranking = self.ranking(scores, drop_conflicting_randoms(items, levels))
        else:
            ranking = queries.new_zeros(())
        parts = {"loss": retrieval + self.beta * ranking, "retrieval": retrieval, "ranking": ranking.detach()}
        if self.head_weight > 0:
            if extra.heads is None:
                raise ValueError("loss.head_weight > 0 needs the query heads' own vectors (ItemVectors.heads)")
            per_head = self.per_head_retrieval(extra.heads, positives, batch, random_vectors, hard_vectors)
            parts["loss"] = parts["loss"] + self.head_weight * per_head
            parts["per_head"] = per_head.detach()
        return parts

    def per_head_retrieval(self, heads: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                           random_vectors: torch.Tensor | None,
                           hard_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Each query head's own retrieval loss (``heads`` [B, H, d]), averaged over heads: every granularity
        must retrieve alone.

        The heads are encoded a second time (the fused vector came from the same pass): the option costs one
        more query-tower forward per step, nothing when ``head_weight`` is 0.
        """
        losses = [self.retrieval_loss(heads[:, h], positives, batch, random_vectors, hard_vectors)
                  for h in range(heads.shape[1])]
        return torch.stack(losses).mean()

    def with_shared_randoms(self, items: torch.Tensor, levels: torch.Tensor, vectors: torch.Tensor,
                            random_items: torch.Tensor, random_vectors: torch.Tensor):
        """Append k of the batch's (already encoded) random negatives to every list, at level 0."""
        k = self.shared_randoms_per_query
        pick = torch.randint(0, len(random_items), (len(items), k), device=items.device)
        return (torch.cat([items, random_items[pick]], 1), torch.cat([levels, torch.zeros_like(pick)], 1),
                torch.cat([vectors, random_vectors[pick]], 1))

    def retrieval_loss(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                       random_vectors: torch.Tensor | None,
                       hard_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Global comparison: softmax over every rank's positives + the shared random items + the row's hard
        items (``hard_vectors`` [B, K, d] of ``batch["hard_items"]``)."""
        logits, targets = in_batch_logits(queries, positives, batch["pos_item"], random_vectors,
                                          batch.get("pair_unit"))
        if random_vectors is not None:
            n_random = len(random_vectors)
            hit = batch["pos_item"][:, None] == batch["random_items"][None, :]
            random_logits = logits[:, -n_random:].masked_fill(hit, float("-inf"))
            logits = torch.cat([logits[:, :-n_random], random_logits], dim=1)
        logits = append_hard_logits(logits, queries, hard_vectors, batch)
        return softmax_cross_entropy(logits, targets, self.temperature, batch.get("pos_weight"))
