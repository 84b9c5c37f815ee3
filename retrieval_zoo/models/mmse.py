"""MMSE: Multi-stage Multi-grained Semantic Embeddings (JD.com, WWW 2023 companion).

Binbin Wang, Mingming Li, Zhixiong Zeng, Jingwei Zhuo, Songlin Wang, Sulong Xu, Bo Long, Weipeng Yan,
"Learning Multi-Stage Multi-Grained Semantic Embeddings for E-Commerce Search", Companion Proceedings of the
ACM Web Conference 2023 (WWW '23 Companion), arXiv 2303.11009. No code was released; only the abstract's
structure is published, so every other choice below is a config key (``configs/mmse.yaml``) listed under
Assumptions. Card with measured results: ``docs/models/mmse.md``.

Published structure, as implemented
-----------------------------------
1. **Multi-stage information mining** [paper]: ordered, clicked, unclicked (exposed, not clicked) and randomly
   sampled items as four levels of signal. Mined by the data module (``data/stages.py``; levels 3 > 2 > 1 > 0)
   and delivered per training example as ``stage_items`` / ``stage_levels`` (the ``stages`` field).
2. **Multi-grained query representations + post-fusion** [paper: "post-fusion strategy"]: the query tower has
   one head per granularity, each an L2-normalised vector q_h:

   - ``hashed``: DSSM-style bag of hashed words + letter trigrams (``query_hashed``), MLP;
   - ``subword``: mean of WordPiece embeddings (``query_tokens``), MLP;
   - ``transformer``: a small Transformer encoder over the WordPiece sequence, mean-pooled, projected;
   - ``sentence`` (``pretrained`` variant): adapter over frozen all-MiniLM-L6-v2 sentence features.

   Each head is scored against the item separately, s_h = <q_h, i>, and the per-head similarities are fused
   *after* scoring: s(q, i) = sum_h w_h(q) s_h with weights on the simplex, either learned global softmax
   weights (``fusion: softmax``) or query-dependent additive attention over the heads (``fusion: attention``).
   In the ``pretrained`` variant the weights start on the sentence head alone and open to the others through a
   learned share that starts at 0 (``HeadFusion``), so the untrained model is zero-shot MiniLM.
   ``fusion: none`` is the ``single_head`` ablation: every granularity's features go through one MLP into one
   query vector (early fusion, same inputs, no per-head scoring).
3. **Item tower**: one vector per item, from the title's granularities (``item_inputs``: hashed bag, mean
   WordPiece embedding, optional frozen sentence features), concatenated, MLP, L2-normalised. Embedding tables
   are shared with the query side (``share_embeddings``), so a title word and a query word start as one vector.
4. **Multi-grained objectives** [paper]: ``losses/multi_grained.py``: retrieval loss with global comparison
   (softmax over in-batch + random items, ``losses/softmax.py``) + beta x ranking loss with local comparison
   over the stage levels of the same query (``losses/stage_ranking.py``).

Serving: one vector per item, one per query
-------------------------------------------
Because the fusion weights depend on the query only, s(q, i) = sum_h w_h(q) <q_h, i> = <sum_h w_h(q) q_h, i>:
the index stores one vector per item, and ``encode_queries`` returns the single fused query vector
q* = sum_h w_h(q) q_h, which gives exactly the post-fusion score (``head_scores`` / ``fused_scores`` expose
the per-head form; the tests check the equality). Serving cost = one ANN search per query, the same as any
two-tower; the extra cost is only the H heads' forward pass on the query side. An item-dependent fusion
(e.g. softmax over the head scores s_h themselves, as in JD's DPSR) would not factor this way: it would need
one ANN search per head and a merge/re-score of the union, H times the search cost. It is deliberately not
offered. The flip side of the exact factorisation: with query-only weights, post-fusion is a query-gated convex
combination of separately projected and normalised head vectors; what it adds over ``single_head`` is the
per-granularity projection and the gate, not a different kind of score.

Assumptions (unpublished; config key in brackets)
-------------------------------------------------
- Heads and their granularities [``model.heads``]: hashed word+trigram, WordPiece mean, 1-layer Transformer
  [``model.transformer_layers``, ``model.transformer_heads``]; MiniLM sentence head only in ``pretrained``.
- Fusion rule [``model.fusion``]: query-dependent attention by default; ``softmax`` (global learned weights).
- Item features [``model.item_inputs``]: hashed bag + mean WordPiece of the title (+ sentence in ``pretrained``).
- Sizes [``model.dim``, ``model.hidden``, ``model.n_buckets``]; shared query/item embedding tables
  [``model.share_embeddings``]; MiniLM WordPiece table as token embeddings [``model.pretrained_tokens``].
- Cosine scores (every head and the item L2-normalised) with temperature [``loss.temperature``].
- Loss weight beta [``loss.beta``], ranking form (pairwise logistic, pairwise margin or listwise)
  [``loss.ranking.mode``], level gains [``loss.ranking.level_gains``, indexed random, unclicked, clicked,
  ordered], pair weighting [``loss.ranking.pair_weighting``], ranking temperature / margin
  [``loss.ranking.temperature``, ``loss.ranking.margin``].
- Stage lists: size and fresh random items per list [``data.stage_list_size``, ``data.stage_random_items``];
  level-0 items taken from the batch's shared random negatives instead, to save encoding
  [``loss.shared_randoms_per_query``]; shared random softmax negatives [``data.n_random_negatives``];
  training positives = clicked or ordered items (the data module's rule).
- No per-head auxiliary loss by default: only the fused score is trained (multi-grained = the two objectives);
  ``loss.head_weight`` adds each head's own retrieval loss.

Input mapping per dataset
-------------------------
simshop (behaviour logs): a search's exposure list gives levels 1-3 (an item keeps the highest level it reached
in that search). Label-only data (Icecat, ESCI): E -> ordered, S -> clicked, C/I -> unclicked, unjudged ->
random; ESCI labels measure relevance, not engagement, so there the ranking loss learns graded relevance. The
model uses no user fields, so it runs unchanged on data without users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from retrieval_zoo.data import text
from retrieval_zoo.models.base import TwoTowerModel
from retrieval_zoo.models.components import (
    PretrainedStart,
    SentenceAdapter,
    TokenEmbedding,
    l2_normalize,
    longest_first,
    masked_mean,
    padding_mask,
)
from retrieval_zoo.models.layers import (
    PositionalTransformer,
    position_table,
    transformer_encoder,
    trim_padding,
)

HeadKind = Literal["hashed", "subword", "transformer", "sentence"]
ItemInput = Literal["hashed", "subword", "sentence"]
Fusion = Literal["attention", "softmax", "none"]
HEADS: tuple[str, ...] = get_args(HeadKind)
ITEM_INPUTS: tuple[str, ...] = get_args(ItemInput)
FUSIONS: tuple[str, ...] = get_args(Fusion)


@dataclass
class MMSEConfig:
    """The ``model:`` section of configs/mmse.yaml (each key documented there)."""

    dim: int = 128
    hidden: int = 128
    n_buckets: int = 100_000
    heads: list[HeadKind] = field(default_factory=lambda: ["hashed", "subword", "transformer"])
    item_inputs: list[ItemInput] = field(default_factory=lambda: ["hashed", "subword"])
    fusion: Fusion = "attention"
    transformer_layers: int = 1
    transformer_heads: int = 4
    share_embeddings: bool = True
    pretrained_tokens: bool = False


def _check_choice(key: str, chosen: list[str], valid: tuple[str, ...]) -> None:
    if not chosen or len(set(chosen)) != len(chosen) or set(chosen) - set(valid):
        raise ValueError(f"{key} must be distinct values of {valid}, got {chosen}")


# -- granularities: shared feature extractors ---------------------------------------------------------
class Granularities(nn.Module):
    """Raw features of one side (query or item) at each granularity; tables may be shared across sides."""

    def __init__(self, side: str, hashed_bag: nn.EmbeddingBag | None, tokens: TokenEmbedding | None):
        super().__init__()
        self.side = side
        self.hashed_bag = hashed_bag
        self.tokens = tokens

    def hashed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # ids are hashed into the data's bucket count; folding keeps any model size valid (0 stays padding)
        return self.hashed_bag(inputs[f"{self.side}_hashed"] % self.hashed_bag.num_embeddings)

    def token_sequence(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # cut the columns that are padding in every row: queries are a few tokens of a 16-token frame, and the
        # transformer's cost grows with the frame, not with the real length
        ids = trim_padding(inputs[f"{self.side}_tokens"])
        return self.tokens(ids), padding_mask(ids)

    def subword(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_mean(*self.token_sequence(inputs))

    def sentence(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs[f"{self.side}_sentence"]

    def of(self, kind: str, inputs: dict[str, torch.Tensor], pool: nn.Module | None = None) -> torch.Tensor:
        """The raw features of granularity ``kind`` (``transformer`` pools the WordPiece sequence with ``pool``)."""
        if kind == "transformer":
            return pool(*self.token_sequence(inputs))
        return getattr(self, kind)(inputs)


def mlp(width_in: int, hidden: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.Tanh(), nn.Linear(hidden, dim))


class TransformerPool(PositionalTransformer):
    """A small Transformer encoder (post-norm, feed-forward 2d) over the WordPiece sequence, mean-pooled over
    real tokens (``layers.PositionalTransformer``)."""

    def __init__(self, dim: int, layers: int, heads: int, max_length: int = 512):
        positions = position_table(max_length, dim, std=0.02)
        super().__init__(positions, transformer_encoder(dim, heads, layers, 2 * dim, norm_first=False))

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pooled(embedded, mask)


# -- query heads and post-fusion --------------------------------------------------------------------------
class QueryHead(nn.Module):
    """One granularity's query vector, L2-normalised (its score against an item is a cosine)."""

    def __init__(self, kind: str, config: MMSEConfig):
        super().__init__()
        dim, hidden = config.dim, config.hidden
        self.kind = kind
        self.pool = None
        if kind == "hashed":
            self.net = mlp(hidden, hidden, dim)
        elif kind == "subword":
            self.net = mlp(dim, hidden, dim)
        elif kind == "transformer":
            self.pool = TransformerPool(dim, config.transformer_layers, config.transformer_heads)
            self.net = nn.Linear(dim, dim)
        else:
            self.net = SentenceAdapter(dim)

    def forward(self, features: Granularities, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``features``: the tower's (possibly shared) extractor."""
        return l2_normalize(self.net(features.of(self.kind, batch, self.pool)))


class HeadFusion(nn.Module):
    """Fusion weights w_h(q) on the simplex: global learned softmax, or attention over the query's heads.

    With an ``anchor`` head (the frozen-MiniLM ``sentence`` head of the pretrained start) the weights are
    ``g * w(q) + (1 - g) * onehot(anchor)``, with a learned ``g`` in [0, 1] that starts at 0: the model starts
    as the anchor alone (zero-shot MiniLM) and lets the randomly initialised heads in as training finds them
    useful. Without it the start was a 4-way average with three random heads (Icecat NDCG@10 0.253 untrained
    against 0.514 for MiniLM).
    """

    def __init__(self, rule: str, n_heads: int, dim: int, anchor: int | None = None):
        super().__init__()
        self.rule = rule
        if rule == "softmax":
            self.logits = nn.Parameter(torch.zeros(n_heads))
        else:  # additive attention: a score per head from its own vector, softmax over heads
            self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.anchor = anchor
        if anchor is not None:
            self.opening = nn.Parameter(torch.zeros(()))
            self.register_buffer("anchor_weights", torch.nn.functional.one_hot(torch.tensor(anchor), n_heads).float())

    def forward(self, heads: torch.Tensor) -> torch.Tensor:
        """heads [B, H, d] -> weights [B, H] (a function of the query alone, so serving stays exact)."""
        if self.rule == "softmax":
            weights = torch.softmax(self.logits, 0).expand(len(heads), -1)
        else:
            weights = torch.softmax(self.score(heads).squeeze(-1), dim=1)
        if self.anchor is None:
            return weights
        # clamped to [0, 1] in value, straight-through in gradient: a plain clamp has no gradient at the start (0)
        opening = self.opening + (self.opening.clamp(0.0, 1.0) - self.opening).detach()
        return opening * weights + (1.0 - opening) * self.anchor_weights


class PostFusionQueryTower(nn.Module):
    """Several heads; ``forward`` returns the serving vector sum_h w_h(q) q_h (see the module docstring)."""

    def __init__(self, features: Granularities, config: MMSEConfig):
        super().__init__()
        heads = list(config.heads)
        self.features = features
        self.heads = nn.ModuleList(QueryHead(kind, config) for kind in heads)
        self.fusion = HeadFusion(config.fusion, len(heads), config.dim,
                                 heads.index("sentence") if "sentence" in heads else None)

    def head_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([head(self.features, batch) for head in self.heads], dim=1)  # [B, H, d]

    def head_weights(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = self.head_vectors(batch)
        return vectors, self.fusion(vectors)                                   # [B, H, d], [B, H]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors, weights = self.head_weights(batch)
        return (weights.unsqueeze(-1) * vectors).sum(1)


class EarlyFusionQueryTower(nn.Module):
    """The ``single_head`` ablation: the same granularities concatenated before one MLP, one vector."""

    def __init__(self, features: Granularities, config: MMSEConfig):
        super().__init__()
        heads, dim, hidden = list(config.heads), config.dim, config.hidden
        self.features = features
        self.kinds = heads
        self.pool = (TransformerPool(dim, config.transformer_layers, config.transformer_heads)
                     if "transformer" in heads else None)
        widths = {"hashed": hidden, "subword": dim, "transformer": dim, "sentence": text.pretrained_dim()}
        self.net = mlp(sum(widths[k] for k in heads), hidden, dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.features.of(kind, batch, self.pool) for kind in self.kinds]
        return l2_normalize(self.net(torch.cat(parts, dim=-1)))


# -- item tower -------------------------------------------------------------------------------------------
class ItemTower(nn.Module):
    """One vector per item from its title: hashed bag, mean WordPiece embedding, frozen sentence features."""

    def __init__(self, features: Granularities, config: MMSEConfig):
        super().__init__()
        inputs, dim, hidden = list(config.item_inputs), config.dim, config.hidden
        self.features = features
        self.inputs = inputs
        widths = {"hashed": hidden, "subword": dim, "sentence": text.pretrained_dim()}
        self.net = mlp(sum(widths[name] for name in inputs), hidden, dim)
        # with sentence features the item starts as zero-shot MiniLM, matching the query's sentence head
        self.start = PretrainedStart(dim) if "sentence" in inputs else None

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.features.of(name, inputs) for name in self.inputs]
        vector = self.net(torch.cat(parts, dim=-1))
        if self.start is not None:
            vector = self.start(vector, self.features.sentence(inputs))
        return l2_normalize(vector)


# -- the model ----------------------------------------------------------------------------------------
class MMSE(TwoTowerModel):
    """Multi-grained query heads with post-fusion scoring, one-vector items (see the module docstring)."""

    def __init__(self, config: MMSEConfig | None = None):
        super().__init__()
        config = config or MMSEConfig()
        heads, item_inputs, fusion = list(config.heads), list(config.item_inputs), config.fusion
        _check_choice("model.heads", heads, HEADS)
        _check_choice("model.item_inputs", item_inputs, ITEM_INPUTS)
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}'; valid: {', '.join(FUSIONS)}")
        self.head_kinds = heads
        self.fusion_rule = fusion
        query_needs = {"hashed": "hashed" in heads, "tokens": bool({"subword", "transformer"} & set(heads))}
        item_needs = {"hashed": "hashed" in item_inputs, "tokens": "subword" in item_inputs}
        query_features, item_features = self._granularities(query_needs, item_needs, config)
        if fusion == "none":
            self.query_tower = EarlyFusionQueryTower(query_features, config)
        else:
            self.query_tower = PostFusionQueryTower(query_features, config)
        self.item_tower = ItemTower(item_features, config)
        self.required_fields = {"stages"} | self._fields(heads, item_inputs)

    @staticmethod
    def _granularities(query_needs: dict[str, bool], item_needs: dict[str, bool],
                       config: MMSEConfig) -> tuple[Granularities, Granularities]:
        def bag(needed: bool) -> nn.EmbeddingBag | None:
            return nn.EmbeddingBag(config.n_buckets, config.hidden, mode="mean", padding_idx=0) if needed else None

        def tokens(needed: bool) -> TokenEmbedding | None:
            return TokenEmbedding(config.dim, pretrained=config.pretrained_tokens) if needed else None

        if config.share_embeddings:  # one table per granularity, used by both sides: a title word and a query word share a vector
            table_bag = bag(query_needs["hashed"] or item_needs["hashed"])
            table_tokens = tokens(query_needs["tokens"] or item_needs["tokens"])
            return Granularities("query", table_bag, table_tokens), Granularities("item", table_bag, table_tokens)
        return (Granularities("query", bag(query_needs["hashed"]), tokens(query_needs["tokens"])),
                Granularities("item", bag(item_needs["hashed"]), tokens(item_needs["tokens"])))

    @staticmethod
    def _fields(heads: list[str], item_inputs: list[str]) -> set[str]:
        query = {"hashed": {"query_hashed"}, "subword": {"query_text"}, "transformer": {"query_text"},
                 "sentence": {"query_sentence"}}
        item = {"hashed": {"item_hashed"}, "subword": {"item_text"}, "sentence": {"item_sentence"}}
        return set().union(*(query[h] for h in heads), *(item[i] for i in item_inputs))

    def catalogue_order(self, catalog) -> np.ndarray | None:
        """Longest item texts first where the item tower reads WordPiece tokens: each batch is trimmed to its
        longest text, and the pretrained table's projection runs on every kept position (Icecat's texts run 12 to
        64 tokens). The vectors are bitwise those of catalogue order (tests/models/test_mmse.py)."""
        return longest_first(catalog.tensors["item_tokens"]) if "subword" in self.item_tower.inputs else None

    def query_head_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each head's own L2-normalised query vector [B, H, d] (``single_head``: its one vector, H = 1)."""
        if not isinstance(self.query_tower, PostFusionQueryTower):
            return self.query_tower(batch).unsqueeze(1)
        return self.query_tower.head_vectors(batch)

    # -- the post-fusion score, spelled out (training and serving use the equal fused vector) ---------
    def head_scores(self, batch: dict[str, torch.Tensor], items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head similarities s_h = <q_h, i> [B, H, N] and the fusion weights [B, H], for items [N, d]."""
        if not isinstance(self.query_tower, PostFusionQueryTower):
            scores = (self.query_tower(batch) @ items.T).unsqueeze(1)
            return scores, scores.new_ones(scores.shape[0], 1)
        vectors, weights = self.query_tower.head_weights(batch)
        return torch.einsum("bhd,nd->bhn", vectors, items), weights

    def fused_scores(self, batch: dict[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """s(q, i) = sum_h w_h(q) <q_h, i> [B, N]: equal to encode_queries(batch) @ items.T."""
        scores, weights = self.head_scores(batch, items)
        return (weights.unsqueeze(-1) * scores).sum(1)
