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
   ``fusion: none`` is the ``single_head`` ablation: every granularity's features go through one MLP into one
   query vector (early fusion, same inputs, no per-head scoring).
3. **Item tower**: one vector per item, from the item-side granularities the heads need (hashed bag of the
   title, mean WordPiece embedding of the title, optional frozen sentence features), concatenated, MLP,
   L2-normalised. Embedding tables are shared with the query side (``share_embeddings``).
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
offered.

Assumptions (unpublished; config key in brackets)
-------------------------------------------------
- Heads and their granularities [``model.heads``]: hashed word+trigram, WordPiece mean, 1-layer Transformer
  [``model.transformer_layers``, ``model.transformer_heads``]; MiniLM sentence head only in ``pretrained``.
- Fusion rule [``model.fusion``]: query-dependent attention by default; ``softmax`` (global learned weights).
- Sizes [``model.dim``, ``model.hidden``, ``model.n_buckets``]; shared query/item embedding tables
  [``model.share_embeddings``]; MiniLM WordPiece table as token embeddings [``model.pretrained_tokens``].
- Cosine scores (every head and the item L2-normalised) with temperature [``loss.temperature``].
- Loss weight beta [``loss.beta``], ranking form (pairwise logistic, pairwise margin or listwise)
  [``loss.ranking.mode``], level gains [``loss.ranking.level_gains``, indexed random, unclicked, clicked,
  ordered], pair weighting [``loss.ranking.pair_weighting``], ranking temperature / margin
  [``loss.ranking.temperature``, ``loss.ranking.margin``].
- Stage lists: size and random items per list [``data.stage_list_size``, ``data.stage_random_items``]; shared
  random softmax negatives [``data.n_random_negatives``]; training positives = clicked or ordered items.
- No per-head auxiliary loss: only the fused score is trained (multi-grained = the two objectives).

Input mapping per dataset
-------------------------
simshop (behaviour logs): a search's exposure list gives levels 1-3 (an item keeps the highest level it reached
in that search). Label-only data (Icecat, ESCI): E -> ordered, S -> clicked, C/I -> unclicked, unjudged ->
random; ESCI labels measure relevance, not engagement, so there the ranking loss learns graded relevance. The
model uses no user fields, so it runs unchanged on data without users.
"""

from __future__ import annotations

import torch
from torch import nn

from retrieval_zoo.data import text
from retrieval_zoo.models.base import TwoTowerModel
from retrieval_zoo.models.components import (
    SentenceAdapter,
    TokenEmbedding,
    l2_normalize,
    masked_mean,
    padding_mask,
)

HEADS = ("hashed", "subword", "transformer", "sentence")
FUSIONS = ("attention", "softmax", "none")


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
        ids = inputs[f"{self.side}_tokens"]
        return self.tokens(ids), padding_mask(ids)

    def subword(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_mean(*self.token_sequence(inputs))


def mlp(width_in: int, hidden: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.Tanh(), nn.Linear(hidden, dim))


class TransformerPool(nn.Module):
    """A small Transformer encoder over the WordPiece sequence, mean-pooled over real tokens."""

    def __init__(self, dim: int, layers: int, heads: int, max_length: int = 64):
        super().__init__()
        self.position = nn.Embedding(max_length, dim)
        nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(embedded.shape[1], device=embedded.device)
        # an empty query would leave every key masked (NaN attention): let it attend to position 0
        keys_mask = mask.clone()
        keys_mask[:, 0] = True
        hidden = self.encoder(embedded + self.position(positions), src_key_padding_mask=~keys_mask)
        return masked_mean(hidden, mask)


# -- query heads and post-fusion --------------------------------------------------------------------------
class QueryHead(nn.Module):
    """One granularity's query vector, L2-normalised (its score against an item is a cosine)."""

    def __init__(self, kind: str, features: Granularities, dim: int, hidden: int, transformer_layers: int,
                 transformer_heads: int):
        super().__init__()
        self.kind = kind
        self.features = [features]  # a list: the shared extractor is owned (and registered) by the tower
        if kind == "hashed":
            self.net = mlp(hidden, hidden, dim)
        elif kind == "subword":
            self.net = mlp(dim, hidden, dim)
        elif kind == "transformer":
            self.pool = TransformerPool(dim, transformer_layers, transformer_heads)
            self.net = nn.Linear(dim, dim)
        else:
            self.net = SentenceAdapter(dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = self.features[0]
        if self.kind == "hashed":
            raw = features.hashed(batch)
        elif self.kind == "subword":
            raw = features.subword(batch)
        elif self.kind == "transformer":
            raw = self.pool(*features.token_sequence(batch))
        else:
            raw = batch["query_sentence"]
        return l2_normalize(self.net(raw))


class HeadFusion(nn.Module):
    """Fusion weights w_h(q) on the simplex: global learned softmax, or attention over the query's heads."""

    def __init__(self, rule: str, n_heads: int, dim: int):
        super().__init__()
        self.rule = rule
        if rule == "softmax":
            self.logits = nn.Parameter(torch.zeros(n_heads))
        else:  # additive attention: a score per head from its own vector, softmax over heads
            self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, heads: torch.Tensor) -> torch.Tensor:
        """heads [B, H, d] -> weights [B, H] (a function of the query alone, so serving stays exact)."""
        if self.rule == "softmax":
            return torch.softmax(self.logits, 0).expand(len(heads), -1)
        return torch.softmax(self.score(heads).squeeze(-1), dim=1)


class PostFusionQueryTower(nn.Module):
    """Several heads; ``forward`` returns the serving vector sum_h w_h(q) q_h (see the module docstring)."""

    def __init__(self, features: Granularities, heads: list[str], fusion: str, dim: int, hidden: int,
                 transformer_layers: int, transformer_heads: int):
        super().__init__()
        self.features = features
        self.heads = nn.ModuleList(QueryHead(kind, features, dim, hidden, transformer_layers, transformer_heads)
                                   for kind in heads)
        self.fusion = HeadFusion(fusion, len(heads), dim)

    def head_vectors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([head(batch) for head in self.heads], dim=1)          # [B, H, d]

    def head_weights(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = self.head_vectors(batch)
        return vectors, self.fusion(vectors)                                   # [B, H, d], [B, H]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors, weights = self.head_weights(batch)
        return (weights.unsqueeze(-1) * vectors).sum(1)


class EarlyFusionQueryTower(nn.Module):
    """The ``single_head`` ablation: the same granularities concatenated before one MLP, one vector."""

    def __init__(self, features: Granularities, heads: list[str], dim: int, hidden: int,
                 transformer_layers: int, transformer_heads: int):
        super().__init__()
        self.features = features
        self.kinds = heads
        self.pool = TransformerPool(dim, transformer_layers, transformer_heads) if "transformer" in heads else None
        widths = {"hashed": hidden, "subword": dim, "transformer": dim, "sentence": text.PRETRAINED_DIM}
        self.net = mlp(sum(widths[k] for k in heads), hidden, dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for kind in self.kinds:
            if kind == "hashed":
                parts.append(self.features.hashed(batch))
            elif kind == "subword":
                parts.append(self.features.subword(batch))
            elif kind == "transformer":
                parts.append(self.pool(*self.features.token_sequence(batch)))
            else:
                parts.append(batch["query_sentence"])
        return l2_normalize(self.net(torch.cat(parts, dim=-1)))


# -- item tower -------------------------------------------------------------------------------------------
class ItemTower(nn.Module):
    """One vector per item: the title's hashed bag, mean WordPiece embedding and (optionally) sentence features."""

    def __init__(self, features: Granularities, use_hashed: bool, use_tokens: bool, use_sentence: bool,
                 dim: int, hidden: int):
        super().__init__()
        self.features = features
        self.use_hashed, self.use_tokens, self.use_sentence = use_hashed, use_tokens, use_sentence
        width = hidden * use_hashed + dim * use_tokens + text.PRETRAINED_DIM * use_sentence
        self.net = mlp(width, hidden, dim)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.use_hashed:
            parts.append(self.features.hashed(inputs))
        if self.use_tokens:
            parts.append(self.features.subword(inputs))
        if self.use_sentence:
            parts.append(inputs["item_sentence"])
        return l2_normalize(self.net(torch.cat(parts, dim=-1)))


# -- the model ----------------------------------------------------------------------------------------
class MMSE(TwoTowerModel):
    """Multi-grained query heads with post-fusion scoring, one-vector items (see the module docstring)."""

    def __init__(self, dim: int = 128, hidden: int = 256, n_buckets: int = 200_000,
                 heads: list[str] | tuple[str, ...] = ("hashed", "subword", "transformer"),
                 fusion: str = "attention", transformer_layers: int = 1, transformer_heads: int = 4,
                 share_embeddings: bool = True, pretrained_tokens: bool = False):
        super().__init__()
        heads = list(heads)
        unknown = sorted(set(heads) - set(HEADS))
        if unknown or not heads or len(set(heads)) != len(heads):
            raise ValueError(f"model.heads must be distinct values of {HEADS}, got {heads}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}'; valid: {', '.join(FUSIONS)}")
        self.head_kinds = heads
        self.fusion_rule = fusion
        use_hashed = "hashed" in heads
        use_tokens = bool({"subword", "transformer"} & set(heads))
        use_sentence = "sentence" in heads
        query_features, item_features = self._granularities(use_hashed, use_tokens, share_embeddings, n_buckets,
                                                            hidden, dim, pretrained_tokens)
        if fusion == "none":
            self.query_tower = EarlyFusionQueryTower(query_features, heads, dim, hidden, transformer_layers,
                                                     transformer_heads)
        else:
            self.query_tower = PostFusionQueryTower(query_features, heads, fusion, dim, hidden,
                                                    transformer_layers, transformer_heads)
        self.item_tower = ItemTower(item_features, use_hashed, use_tokens, use_sentence, dim, hidden)
        self.required_fields = {"stages"} | self._fields(use_hashed, use_tokens, use_sentence)

    @staticmethod
    def _granularities(use_hashed: bool, use_tokens: bool, shared: bool, n_buckets: int, hidden: int, dim: int,
                       pretrained_tokens: bool) -> tuple[Granularities, Granularities]:
        def bag() -> nn.EmbeddingBag | None:
            return nn.EmbeddingBag(n_buckets, hidden, mode="mean", padding_idx=0) if use_hashed else None

        def tokens() -> TokenEmbedding | None:
            return TokenEmbedding(dim, pretrained=pretrained_tokens) if use_tokens else None

        query_bag, query_tokens = bag(), tokens()
        item_bag, item_tokens = (query_bag, query_tokens) if shared else (bag(), tokens())
        return Granularities("query", query_bag, query_tokens), Granularities("item", item_bag, item_tokens)

    @staticmethod
    def _fields(use_hashed: bool, use_tokens: bool, use_sentence: bool) -> set[str]:
        fields = set()
        if use_hashed:
            fields |= {"query_hashed", "item_hashed"}
        if use_tokens:
            fields |= {"query_text", "item_text"}
        if use_sentence:
            fields |= {"query_sentence", "item_sentence"}
        return fields

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

    @torch.no_grad()
    def mean_head_weights(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Average fusion weight per head over a batch (for the model card's analysis)."""
        if not isinstance(self.query_tower, PostFusionQueryTower):
            return {"single": 1.0}
        _, weights = self.query_tower.head_weights(batch)
        return dict(zip(self.head_kinds, weights.mean(0).tolist(), strict=True))
