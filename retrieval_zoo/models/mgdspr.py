"""MGDSPR: Multi-Grained Deep Semantic Product Retrieval (Taobao search).

Li, Sen, et al., "Embedding-based Product Retrieval in Taobao Search", KDD 2021, arXiv 2106.09297.
The model card with measured results is ``docs/models/mgdspr.md``; the loss is
``retrieval_zoo/losses/mixed_hard_negatives.py``; the config and ablation variants ``configs/mgdspr.yaml``.

**Query/user tower** (heavy), hidden size d everywhere:

- *Multi-granular semantic unit* Q_mgs, six rows of size d (``MultiGranularUnit``). English has no characters
  that carry meaning the way Chinese ones do, so the granularities are mapped to English units:
  row 1 = mean of WordPiece **subword** embeddings (``query_tokens``; the analogue of Chinese character
  unigrams, and the table a MiniLM start can initialise), row 2 = mean of hashed **character n-grams** of each
  word (``#word#`` letter trigrams by default, ``char_ngram``: the analogue of character bigrams, robust to
  typos), row 3 = mean of hashed **whole words**, row 4 = mean of a **Transformer** encoder's outputs over the
  words, row 5 = attention of row 3 over the user's **previous queries** (each the mean of its word
  embeddings; ``hist_query_tokens``), row 6 = the **sum** of rows 1-5.
- *User behaviour attention* (``BehaviourAttention``): Q_mgs attends to each behaviour set (the query attends
  to the history, not the target item), softmax(Q K^T / sqrt(d)) K, with a **zero vector prepended** to every
  set so the query can attend to "nothing". Real-time (``hist_realtime``, <= 50 actions): 2-layer LSTM (dropout
  0.2) with a residual connection, then 8-head self-attention. Short-term (``hist_short``, 10 days, <= 100):
  8-head self-attention. Long-term (``hist_long`` + ``hist_long_action``, 30 days, <= 100): for each of item,
  shop, leaf category and brand, the embeddings of the clicked, ordered and collected items are mean-pooled
  per action (3 rows), attended, and the four attributes' outputs are summed. Each gives 6 x d: H_real,
  H_short, H_long. Padding is never attended (masks everywhere; an empty set attends to the zero vector only
  and gives exactly 0).
- *Fusion* (``FusionEncoder``): [CLS] + Q_mgs + H_real + H_short + H_long (25 rows) through a self-attention
  (Transformer) encoder; the output at [CLS] is the query vector.

**Item tower** (light): item-id embedding + tanh(W . mean of title word embeddings).
**Score**: the inner product (unnormalised vectors, as in the paper). **Loss**: softmax over in-batch negatives
with temperature tau = 2 plus mixed hard negatives (see the loss module).

**Assumptions** (the paper is silent; each is a config key where it could matter):

- English units as above; words and character n-grams are hashed (``word_buckets``, ``char_buckets``) so any
  text works without a vocabulary; title words share the query's word table (``share_word_table``). Previous
  queries are matched to their searches by WordPiece content to recover their words.
- Behaviour items are their item-id embedding (``behaviour_items: id``, the paper's id features; the table is
  shared with the item tower, so history lives in the space the query is scored against) plus query-side shop,
  leaf-category and brand embeddings (``side_features``). ``behaviour_items: tower`` encodes them with the item
  tower's id + title part instead (each distinct history item of a batch once); measured on simshop (seed 0,
  full model) it trained 1.8x slower for the same quality (recall@100 0.601 vs 0.602, ndcg@10 0.771 vs 0.763).
- The query attention over behaviour and previous queries is scaled by 1/sqrt(d) and has no projections
  (the paper's softmax(Q K^T) K). Row 5 also gets a prepended zero vector, so an empty query history gives 0.
- The history self-attentions (real-time after the LSTM, short-term) have a residual connection; no
  positional embeddings there. The word Transformer (row 4) has learned positions and ``query_layers`` layers;
  the fusion encoder has learned slot embeddings (which row of which block) and ``fusion_layers`` layers.
  Both are pre-norm, feed-forward 4d, dropout ``dropout`` (0: the paper names dropout only for the LSTM); the
  fusion encoder ends in a LayerNorm, which keeps the unnormalised logits from exploding in AdaGrad's first
  steps (``FusionEncoder``).
- Long-term sets: mean per action type (click, order, collect) per attribute (``long_term: action_sets``), or
  attention over every action (``long_term: sequence``).
- Without the fusion encoder (ablations) the query vector is the sum of every block's last ("sum") row.
  ``fusion_residual`` (off: not the paper's; variants ``residual_fusion`` and ``residual_fusion_no_user``) adds
  the fusion output to that sum instead of replacing it (see the model card for what it does on simshop).
- Tables start N(0, 1/d) (``embedding_std``); the item-id table is sized from the catalogue in ``prepare``.
  Large tables get sparse gradients (``sparse_gradients``; set false for NCCL DDP or Adam).
- AdaGrad (lr 0.1, the paper's) with its accumulator at 1e-4 (``optimizer.initial_accumulator_value``): torch's
  0 makes the first step lr * sign(g) for every weight and the loss explodes, and TensorFlow's 0.1 leaves the
  sparse embedding rows, which see few small gradients, nearly untrained in one epoch. The dense layers
  (Transformers, LSTM, attention and title projections) train at lr 0.02 (``optimizer.dense.lr``): at 0.1
  their first steps move every weight by about its own initial size (three steps moved the fusion encoder's
  weights by about their norm), and the fusion variants collapsed in some seeds. Measured on simshop, seed 0:
  the no-user form's ndcg@10 0.753 -> 0.805; the plain ``base`` two-tower, whose only dense layer is the title
  projection, loses (0.815 -> 0.778); TF's accumulator start 0.1 for the dense layers was worse on both.
- ``normalize`` (off by default, not the paper's) L2-normalises both towers' vectors, the usual recipe for
  cosine logits with a small temperature (see the model card for what it does on simshop).
- A MiniLM start (``pretrained_subwords``) initialises the subword table (row 1) from all-MiniLM-L6-v2's
  WordPiece table (frozen by default: AdaGrad at lr 0.1 would overwrite it), and ``pretrained_sentence`` adds
  frozen sentence features through an adapter to both towers' outputs.
- The user-id field is not used: the paper's tower has no user-id embedding (a user is their behaviour).

**Inputs per dataset**: simshop has everything (searches, users, click/order/collect logs, shops, categories,
brands). Datasets without behaviour (Icecat, ESCI) lack ``user_history`` / ``query_history``: those branches are
skipped (row 5 is zero, no H blocks, the fusion sees [CLS] + Q_mgs), shop/category/brand are unused, and the
model runs in its no-user form with no change to the runner.

**CPU cost**: the behaviour encoders dominate (the no-user form trains ~15x faster). They run on the real
positions only where that is exact: projections of real actions only, rows attended in chunks of similar
length (``by_length``), the LSTM over compacted rows. Training batches are grouped by search
(``data.group_by_unit``, datamodule.py): a simshop training search has ~2 engaged items, so the query/user tower
runs once per search instead of once per pair (about half the work), and the search's other positives are
masked in its softmax (they are positives, not negatives). Two epochs (``trainer.max_epochs: 2``) then take the
time one took. Measured numbers are in the model card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval_zoo.data.text import UnitHasher, char_ngrams_of, words_of
from retrieval_zoo.models.base import TwoTowerModel
from retrieval_zoo.models.components import (
    PretrainedStart,
    TokenEmbedding,
    l2_normalize,
    masked_mean,
    padding_mask,
)
from retrieval_zoo.models.layers import (
    PositionalTransformer,
    attendable,
    learned_positions,
    transformer_encoder,
)

ROWS = 6  # rows of the multi-granular unit and of every behaviour block
ATTRIBUTES = ("item_shop", "item_category", "item_brand")  # catalogue tensors of the behaviour side features
LONG_TERM_ACTIONS = (1, 2, 3)  # click, order, collect (features.HISTORY_ACTIONS)
SPARSE_MIN_ROWS = 20_000  # tables at least this large get sparse gradients (with sparse_gradients)
LSTM_ROWS_PER_CHUNK = 64  # the LSTM runs over rows of similar length (fewer, larger chunks: it is sequential)


@dataclass
class MGDSPRConfig:
    """The ``model:`` section of configs/mgdspr.yaml (each key documented there)."""

    dim: int = 128
    heads: int = 8
    multi_granular: bool = True
    query_history: bool = True
    behaviour: bool = True
    fusion: bool = True
    char_ngram: int = 3
    char_buckets: int = 65_536
    word_buckets: int = 65_536
    query_max_words: int = 12
    title_max_words: int = 48
    char_max_grams: int = 64
    share_word_table: bool = True
    query_layers: int = 1
    fusion_layers: int = 1
    fusion_residual: bool = False
    lstm_layers: int = 2
    lstm_dropout: float = 0.2
    dropout: float = 0.0
    long_term: Literal["action_sets", "sequence"] = "action_sets"
    side_features: bool = True
    behaviour_items: Literal["id", "tower"] = "id"
    item_id: bool = True
    pretrained_subwords: bool = False
    freeze_pretrained: bool = True
    pretrained_sentence: bool = False
    sparse_gradients: bool = True
    normalize: bool = False
    embedding_std: float | None = None

    @property
    def table_std(self) -> float:
        """Std of the embedding tables' N(0, std^2) start: ``embedding_std``, or 1/sqrt(dim) when null."""
        return self.embedding_std if self.embedding_std is not None else self.dim**-0.5


# ================================================================================================
# Text units (built once in prepare; the hashing itself is data/text.py's)
# ================================================================================================
def history_rows(history_tokens: torch.Tensor, unit_tokens: torch.Tensor, unit_rows: np.ndarray) -> np.ndarray:
    """Map each previous query of ``hist_query_tokens`` [M, H, T] to its row of ``unit_rows`` (words of a unit).

    The data module stores previous queries as WordPiece ids copied from other units' ``query_tokens``, so
    matching by token content recovers their words; all-padding rows map to zeros.
    """
    units = unit_tokens.numpy()
    flat = history_tokens.reshape(-1, history_tokens.shape[-1]).numpy()
    # units come first, so a history row equal to some unit's tokens finds a first occurrence < len(units)
    _, first, inverse = np.unique(np.concatenate([units, flat]), axis=0, return_index=True, return_inverse=True)
    source = first[inverse.reshape(-1)[len(units):]]
    found = (source < len(units)) & flat.any(axis=1)
    out = np.zeros((len(flat), unit_rows.shape[1]), dtype=np.int64)
    out[found] = unit_rows[source[found]]
    return out.reshape(*history_tokens.shape[:2], unit_rows.shape[1])


# ================================================================================================
# Attention helpers
# ================================================================================================
def attend_with_null(queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) K over [0; K]: Q [B, R, d] attends to K [B, L, d] where ``mask`` [B, L].

    The prepended zero vector is always attendable, so an empty set gives exactly 0 (never NaN) and padding
    (mask False) gets exactly zero weight.
    """
    return attend_with_null_weights(queries, keys, mask)[0]


def attend_with_null_weights(queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``attend_with_null`` and its weights [B, R, 1 + L]: column 0 is the zero vector, column j + 1 key j."""
    batch, _, dim = keys.shape
    keys = torch.cat([keys.new_zeros(batch, 1, dim), keys], dim=1)
    mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)
    scores = queries @ keys.transpose(1, 2) / math.sqrt(dim)
    weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
    return weights @ keys.masked_fill(~mask[..., None], 0.0), weights


def drop_padding_columns(*tensors: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the columns that are padding in every row (exact: masked positions never count); keep >= 1."""
    keep = mask.any(dim=0)
    if keep.all():
        return (*tensors, mask)
    if not keep.any():
        keep[0] = True
    return (*(t[:, keep] for t in tensors), mask[:, keep])


def compact_left(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real positions to the front, order kept (histories arrive left-padded, oldest first)."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    values = values.gather(1, order[..., None].expand_as(values))
    lengths = mask.sum(dim=1)
    return values, torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]


def by_length(function, values: torch.Tensor, mask: torch.Tensor, rows_per_chunk: int) -> torch.Tensor:
    """``function(values, mask)`` applied to chunks of rows of similar length, each trimmed to its longest row.

    Rows must be compacted (real positions first). Exact for row-wise functions whose outputs at real positions
    do not depend on the padding after them (masked self-attention, a causal LSTM); the padded tail of the output
    is zero. Behaviour sets are mostly padding (simshop short-term: ~18 real of up to 100), so attention costs
    drop from B * L_max^2 to about the sum of the rows' own L^2.
    """
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths)
    pieces = []
    # sort once and split into views: indexing the full tensor per chunk would cost a full-size gradient each
    chunks = zip(values[order].split(rows_per_chunk), mask[order].split(rows_per_chunk),
                 lengths[order].split(rows_per_chunk), strict=True)
    for chunk, chunk_mask, chunk_lengths in chunks:
        n = max(int(chunk_lengths[-1]), 1)  # sorted: the last row is the longest
        out = function(chunk[:, :n], chunk_mask[:, :n])
        pieces.append(F.pad(out, (0, 0, 0, values.shape[1] - n)))
    return torch.cat(pieces)[torch.argsort(order)]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a residual connection over a padded, compacted set.

    The same computation as ``nn.MultiheadAttention`` with a key padding mask, but cheaper on CPU: the
    projections run on the real positions only, and rows are attended in chunks of similar length.
    """

    def __init__(self, dim: int, heads: int, dropout: float, rows_per_chunk: int = 32):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.rows_per_chunk = rows_per_chunk
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = values.shape
        qkv = values.new_zeros(batch, length, 3 * dim).index_put((mask,), self.qkv(values[mask]))
        mixed = by_length(self.attend, qkv, mask, self.rows_per_chunk)
        return values + values.new_zeros(values.shape).index_put((mask,), self.out(mixed[mask]))

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = qkv.shape
        q, k, v = qkv.view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=attendable(mask)[:, None, None, :],
                                               dropout_p=self.dropout if self.training else 0.0)
        return mixed.transpose(1, 2).reshape(batch, length, -1)


def pre_norm_encoder(dim: int, heads: int, layers: int, dropout: float, final_norm: bool = False) -> nn.Module:
    """MGDSPR's Transformer layers (row 4 and the fusion encoder): pre-norm, feed-forward 4d.

    The fusion encoder's output is the query vector, and its final norm bounds its scale: with unnormalised
    inner-product logits and AdaGrad at lr 0.1, whose first steps move every weight by about lr, an unbounded
    residual stream made the logits explode early in training (loss ~100 after 20 steps on simshop; with
    history items encoded by the item tower the run never recovered).
    """
    return transformer_encoder(dim, heads, layers, 4 * dim, dropout, norm_first=True, final_norm=final_norm)


# ================================================================================================
# Shared embeddings: words, item ids and item attributes
# ================================================================================================
def embedding(rows: int, dim: int, sparse: bool, std: float, padding: bool = True) -> nn.Embedding:
    """A table with N(0, std^2) rows (row 0 = padding, zero, unless ``padding`` is off).

    ``sparse`` applies to large tables only: a small table's dense gradient is cheaper than a sparse one built
    from tens of thousands of history lookups per batch.
    """
    sparse = sparse and rows >= SPARSE_MIN_ROWS
    table = nn.Embedding(rows, dim, padding_idx=0 if padding else None, sparse=sparse)
    nn.init.normal_(table.weight, std=std)
    if padding:
        with torch.no_grad():
            table.weight[0].zero_()
    if sparse:
        table.weight.register_post_accumulate_grad_hook(coalesce_grad)
    return table


def coalesce_grad(parameter: torch.Tensor) -> None:
    """A table looked up in several places gets its sparse gradients concatenated; coalescing them keeps the
    gradient-clipping norm exact."""
    parameter.grad = parameter.grad.coalesce()


def bag_mean(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Mean of the embeddings of the non-padding ids along the last dimension (zero for an all-padding row)."""
    flat = ids.reshape(-1, ids.shape[-1])
    return F.embedding_bag(flat, table.weight, mode="mean", padding_idx=0,
                           sparse=table.sparse).reshape(*ids.shape[:-1], -1)


class CatalogEmbeddings(nn.Module):
    """Item-id embeddings (shared by the item tower and the behaviour sequences), the query-side shop,
    leaf-category and brand embeddings of behaviour items, and the catalogue's title words (so history items
    can be encoded on the model's device); sized from the catalogue by ``build``."""

    def __init__(self, dim: int, side_features: bool, sparse: bool, std: float):
        super().__init__()
        self.dim = dim
        self.side_features = side_features
        self.sparse = sparse
        self.std = std
        self.item: nn.Embedding | None = None
        self.attributes = nn.ModuleDict()

    def build(self, catalog) -> None:
        self.item = embedding(len(catalog), self.dim, self.sparse, self.std, padding=False)
        self.register_buffer("title_words_of", catalog.tensors["mgdspr_title_words"], persistent=False)
        for name in ATTRIBUTES:
            if name in catalog.tensors:
                ids = catalog.tensors[name].long()
                self.register_buffer(f"{name}_of", ids, persistent=False)
                self.attributes[name] = embedding(int(ids.max()) + 1, self.dim, self.sparse, self.std)

    @property
    def built(self) -> bool:
        return self.item is not None

    def ids(self, name: str, items: torch.Tensor) -> torch.Tensor:
        """Attribute ids of catalogue items (``item`` = the item index itself)."""
        return items if name == "item" else getattr(self, f"{name}_of")[items]

    def attribute(self, name: str, items: torch.Tensor) -> torch.Tensor:
        table = self.item if name == "item" else self.attributes[name]
        return table(self.ids(name, items))

    def side(self, items: torch.Tensor) -> torch.Tensor | float:
        """Sum of the shop, leaf-category and brand embeddings of ``items`` (0 without side features)."""
        total = 0.0
        if self.side_features:
            for name in self.attributes:
                total = total + self.attribute(name, items)
        return total

    def attribute_names(self) -> list[str]:
        return ["item", *(self.attributes if self.side_features else [])]


# ================================================================================================
# Query tower
# ================================================================================================
class MultiGranularUnit(nn.Module):
    """Q_mgs [B, 6, d]: subwords, character n-grams, words, word Transformer, previous queries, their sum.

    With ``multi_granular`` off (the plain two-tower ablation) it is the word mean alone, [B, 1, d].
    """

    def __init__(self, config: MGDSPRConfig, words: nn.Embedding):
        """``words``: the hashed-word table (rows 3-5), shared with the item titles under ``share_word_table``."""
        super().__init__()
        dim, std, sparse = config.dim, config.table_std, config.sparse_gradients
        pretrained_subwords = config.pretrained_subwords
        self.words = words
        self.multi_granular = multi_granular = config.multi_granular
        self.query_history = config.query_history and multi_granular  # row 5 is a row of the multi-granular unit
        if multi_granular:
            self.subwords = TokenEmbedding(dim, pretrained=pretrained_subwords,
                                           freeze_pretrained=config.freeze_pretrained)
            if not pretrained_subwords:
                nn.init.normal_(self.subwords.table.weight, std=std)
                with torch.no_grad():
                    self.subwords.table.weight[0].zero_()
            if sparse and self.subwords.table.weight.requires_grad:
                self.subwords.table.sparse = True
                self.subwords.table.weight.register_post_accumulate_grad_hook(coalesce_grad)
            self.chars = embedding(config.char_buckets, dim, sparse, std)
            # the positions are registered here first, as they always were: the unit's parameter order (and with it
            # the optimiser's) is unchanged by the shared block, which holds the same tensor
            self.positions = learned_positions(config.query_max_words, dim, dim**-0.5)
            # no final norm: a normalised row 4 (norm ~sqrt(d)) would swamp the other rows in the sum row 6
            # (measured: -0.03 ndcg@10)
            self.transformer = PositionalTransformer(
                self.positions, pre_norm_encoder(dim, config.heads, config.query_layers, config.dropout))

    @property
    def rows(self) -> int:
        return ROWS if self.multi_granular else 1

    def word_mean(self, ids: torch.Tensor) -> torch.Tensor:
        return bag_mean(self.words, ids)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        words = batch["mgdspr_words"]
        word_row = self.word_mean(words)
        if not self.multi_granular:
            return word_row[:, None]
        tokens = batch["query_tokens"]
        subword_row = masked_mean(self.subwords(tokens), padding_mask(tokens))
        char_row = bag_mean(self.chars, batch["mgdspr_chars"])
        rows = [subword_row, char_row, word_row, self.transformer_row(words), self.history_row(word_row, batch)]
        rows.append(torch.stack(rows).sum(0))
        return torch.stack(rows, dim=1)

    def transformer_row(self, words: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(words)
        words, mask = drop_padding_columns(words, mask=mask)
        return self.transformer.pooled(self.words(words), mask)

    def history_row(self, word_row: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Row 5: the query's word row attends over the previous queries' word means (zero if there are none)."""
        if not self.query_history or "mgdspr_hist_words" not in batch:
            return torch.zeros_like(word_row)
        history = batch["mgdspr_hist_words"]
        previous = self.word_mean(history)
        return attend_with_null(word_row[:, None], previous, history.gt(0).any(-1))[:, 0]


class BehaviourAttention(nn.Module):
    """Q_mgs attends to the real-time, short-term and long-term behaviour: H_real, H_short, H_long [B, R, d]."""

    def __init__(self, config: MGDSPRConfig, items: CatalogEmbeddings, item_tower: MGDSPRItemTower | None):
        """``items``: the shared id and side-feature tables; ``item_tower``: encodes history items
        (``behaviour_items: tower``), or None: history items are their id embedding only."""
        super().__init__()
        long_term, dim, heads, dropout = config.long_term, config.dim, config.heads, config.dropout
        if long_term not in ("action_sets", "sequence"):
            raise ValueError(f"long_term must be 'action_sets' or 'sequence', got '{long_term}'")
        self.items = items
        self.item_tower = item_tower
        self.long_term = long_term
        self.lstm = nn.LSTM(dim, dim, config.lstm_layers, batch_first=True, dropout=config.lstm_dropout)
        self.realtime_attention = SelfAttention(dim, heads, dropout)
        self.short_attention = SelfAttention(dim, heads, dropout)
        # inspection only (``record_attention``): block -> (weights [B, R, 1 + L], what the L columns are)
        self.recorded: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def record_attention(self, on: bool = True) -> None:
        """Keep the query attention weights of the next forward passes in ``recorded`` (off: stop, clear).

        ``realtime`` and ``short``: the columns' catalogue item indices [B, L] (-1 = padding; the real actions
        first, oldest first); ``long/<attribute>``: the columns are the click, order and collect sets [3].
        Column 0 of the weights is the prepended zero vector in both.
        """
        self.recorded = {} if on else None

    def attend(self, block: str, q_mgs: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
               columns: torch.Tensor) -> torch.Tensor:
        output, weights = attend_with_null_weights(q_mgs, values, mask)
        if self.recorded is not None:
            self.recorded[block] = (weights.detach(), columns.detach())
        return output

    def forward(self, q_mgs: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [self.realtime(q_mgs, batch["hist_realtime"]), self.short_term(q_mgs, batch["hist_short"]),
                self.long(q_mgs, batch["hist_long"], batch["hist_long_action"])]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """History items in the item tower's space (id + title), or their id embedding alone."""
        if self.item_tower is None:
            return self.items.item(items)
        return self.item_tower.encode_indices(items)

    def sequence(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embeddings of a behaviour sequence (-1 = padding, zeroed), its items and mask, real actions moved to
        the front and all-padding columns dropped."""
        items, mask = drop_padding_columns(items, mask=items >= 0)
        values = (self.item_vectors(items.clamp(min=0)) + self.items.side(items.clamp(min=0))) * mask[..., None]
        items = compact_left(items[..., None], mask)[0][..., 0]  # compact_left orders by the mask alone
        values, mask = compact_left(values, mask)
        return values, items.masked_fill(~mask, -1), mask

    def realtime(self, q_mgs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """LSTM (residual) over the actions, then self-attention, then the query attends.

        The real actions are moved to the front of each row first: the LSTM is causal, so its outputs there are
        exactly those of the LSTM over the real sequence alone (the padded tail is masked afterwards). This is
        cheaper on CPU than packing the sequences.
        """
        values, items, mask = self.sequence(items)
        hidden = by_length(lambda v, _: self.lstm(v)[0], values, mask, LSTM_ROWS_PER_CHUNK) + values
        hidden = self.realtime_attention(hidden, mask)
        return self.attend("realtime", q_mgs, hidden, mask, items)

    def short_term(self, q_mgs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        values, items, mask = self.sequence(items)
        return self.attend("short", q_mgs, self.short_attention(values, mask), mask, items)

    def long(self, q_mgs: torch.Tensor, items: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Per attribute (item, shop, leaf category, brand): attend over its action sets; sum the attributes."""
        items, actions, mask = drop_padding_columns(items, actions, mask=(items >= 0) & (actions > 0))
        items = items.clamp(min=0)
        kinds = torch.stack([mask & (actions == kind) for kind in LONG_TERM_ACTIONS], dim=1)  # [B, 3, L]
        present = kinds.any(dim=-1)
        weights = kinds.to(q_mgs.dtype)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)  # mean over each action's set
        total = torch.zeros_like(q_mgs)
        columns = items.masked_fill(~mask, -1) if self.long_term == "sequence" else \
            torch.tensor(LONG_TERM_ACTIONS, device=items.device)  # what each attended column is (inspection)
        for name in self.items.attribute_names():
            values = self.item_vectors(items) if name == "item" else self.items.attribute(name, items)
            if self.long_term == "sequence":
                total = total + self.attend(f"long/{name}", q_mgs, values, mask, columns)
            else:
                total = total + self.attend(f"long/{name}", q_mgs, weights @ values, present, columns)
        return total


class FusionEncoder(nn.Module):
    """Self-attention over [CLS] + Q_mgs + H_real + H_short + H_long; the output at [CLS] is the query vector."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float, max_slots: int = 1 + 4 * ROWS):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(dim) * dim**-0.5)
        slots = learned_positions(max_slots, dim, dim**-0.5)  # which row of which block
        self.encoder = PositionalTransformer(slots, pre_norm_encoder(dim, heads, layers, dropout, final_norm=True))

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        rows = torch.cat([self.cls.expand(len(blocks[0]), 1, -1), *blocks], dim=1)
        return self.encoder(rows)[:, 0]


def sum_rows(blocks: list[torch.Tensor]) -> torch.Tensor:
    """The sum of every block's last ("sum") row: the query vector without (or under) the fusion encoder."""
    return torch.stack([block[:, -1] for block in blocks]).sum(0)


class MGDSPRQueryTower(nn.Module):
    def __init__(self, unit: MultiGranularUnit, behaviour: BehaviourAttention | None,
                 fusion: FusionEncoder | None, sentence: PretrainedStart | None, fusion_residual: bool = False):
        super().__init__()
        self.unit = unit
        self.behaviour = behaviour
        self.fusion = fusion
        self.fusion_residual = fusion_residual
        self.sentence = sentence

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        q_mgs = self.unit(batch)
        blocks = [q_mgs]
        if self.behaviour is not None and "hist_realtime" in batch:
            blocks += self.behaviour(q_mgs, batch)
        if self.fusion is None:  # ablation without fusion
            vector = sum_rows(blocks)
        elif self.fusion_residual:  # the fusion output refines the sum instead of replacing it
            vector = sum_rows(blocks) + self.fusion(blocks)
        else:
            vector = self.fusion(blocks)
        if self.sentence is not None:
            vector = self.sentence(vector, batch["query_sentence"])
        return vector


# ================================================================================================
# Item tower
# ================================================================================================
class MGDSPRItemTower(nn.Module):
    """Item-id embedding + tanh(W . mean of title word embeddings) (+ a frozen-sentence adapter if asked)."""

    def __init__(self, dim: int, words: nn.Embedding, items: CatalogEmbeddings, item_id: bool,
                 sentence: PretrainedStart | None):
        super().__init__()
        self.words = words
        self.items = items
        self.item_id = item_id
        self.title = nn.Linear(dim, dim, bias=False)
        self.sentence = sentence

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.items.built:
            raise RuntimeError("MGDSPR.prepare(datamodule) must run before items are encoded")
        vector = self.encode(inputs["item_index"], inputs["mgdspr_title_words"])
        if self.sentence is not None:
            vector = self.sentence(vector, inputs["item_sentence"])
        return vector

    def encode(self, items: torch.Tensor, title_words: torch.Tensor) -> torch.Tensor:
        vector = torch.tanh(self.title(bag_mean(self.words, title_words)))
        return vector + self.items.item(items) if self.item_id else vector

    def encode_indices(self, items: torch.Tensor) -> torch.Tensor:
        """Id + title part of catalogue items given by index (behaviour items), each distinct item once."""
        distinct, inverse = torch.unique(items, return_inverse=True)
        return self.encode(distinct, self.items.title_words_of[distinct].long())[inverse]  # stored as int32


# ================================================================================================
# The model
# ================================================================================================
class MGDSPR(TwoTowerModel):
    """MGDSPR behind the two-tower interface (see the module docstring); every component has a switch."""

    required_fields = {"query_text"}
    optional_fields = {"user_history", "query_history", *ATTRIBUTES}

    def __init__(self, config: MGDSPRConfig | None = None):
        super().__init__()
        config = config or MGDSPRConfig()
        dim, std, sparse = config.dim, config.table_std, config.sparse_gradients
        self.normalize = config.normalize
        self.char_ngram = config.char_ngram
        self.query_max_words = config.query_max_words
        self.title_max_words = config.title_max_words
        self.char_max_grams = config.char_max_grams
        self.word_hasher = UnitHasher(config.word_buckets, "word:")
        self.char_hasher = UnitHasher(config.char_buckets, "char:")
        self.items = CatalogEmbeddings(dim, config.side_features, sparse, std)
        query_words = embedding(config.word_buckets, dim, sparse, std)
        title_words = query_words if config.share_word_table else embedding(config.word_buckets, dim, sparse, std)
        unit = MultiGranularUnit(config, query_words)
        self.item_tower = MGDSPRItemTower(dim, title_words, self.items, config.item_id,
                                          PretrainedStart(dim) if config.pretrained_sentence else None)
        if config.behaviour_items not in ("tower", "id"):
            raise ValueError(f"behaviour_items must be 'tower' or 'id', got '{config.behaviour_items}'")
        attention = (BehaviourAttention(config, self.items,
                                        self.item_tower if config.behaviour_items == "tower" else None)
                     if config.behaviour else None)
        fuser = FusionEncoder(dim, config.heads, config.fusion_layers, config.dropout) if config.fusion else None
        self.query_tower = MGDSPRQueryTower(unit, attention, fuser,
                                            PretrainedStart(dim) if config.pretrained_sentence else None,
                                            config.fusion_residual)
        # only the inputs a configuration uses are built (the no-user form asks for no history at all)
        optional = set(ATTRIBUTES) if config.behaviour and config.side_features else set()
        if config.behaviour:
            optional.add("user_history")
        if unit.query_history:
            optional.add("query_history")
        self.optional_fields = optional
        if config.pretrained_sentence:
            self.required_fields = self.required_fields | {"query_sentence", "item_sentence"}

    def encode_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = self.query_tower(batch)
        return l2_normalize(vectors) if self.normalize else vectors

    def encode_items(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = self.item_tower(inputs)
        return l2_normalize(vectors) if self.normalize else vectors

    def prepare(self, datamodule) -> None:
        """Hash the query, previous-query and title words and character n-grams; size the item tables."""
        units, catalog = datamodule.units, datamodule.catalog
        unit_words = self.word_hasher.encode_texts(units.texts, words_of, self.query_max_words)
        units.add("mgdspr_words", unit_words)
        units.add("mgdspr_chars", self.char_hasher.encode_texts(units.texts, partial(char_ngrams_of, n=self.char_ngram),
                                                                self.char_max_grams))
        if "hist_query_tokens" in units.tensors and "query_history" in self.optional_fields:
            units.add("mgdspr_hist_words", history_rows(units.tensors["hist_query_tokens"],
                                                        units.tensors["query_tokens"], unit_words))
        catalog.add("mgdspr_title_words",
                    self.word_hasher.encode_texts(catalog.texts, words_of, self.title_max_words, np.int32))
        if not self.items.built:
            self.items.build(catalog)
