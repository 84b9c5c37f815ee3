"""MRSE: lightweight mixture-of-experts over text and images, with multi-modal user profiles (Shopee).

"MRSE: An Efficient Multi-modality Retrieval System for Large Scale E-commerce", Shopee, arXiv 2408.14968
(2024). Text-only embedding retrieval misses intents that only a product's picture carries (a colour the title
never names), and one fixed blend of modalities ignores that shoppers weigh them differently. MRSE answers with
small experts, a learned mixture per input, a user profile built from what the user recently clicked, and a
hybrid loss.
The model card with measured results is docs/models/mrse.md.

Components as implemented (every size and choice is a key of ``configs/mrse.yaml``):

- **Frozen image tower + trainable adaptor** (``image_features.py``). Image features are computed once per
  product in ``prepare`` and cached on disk (``cache_dir()/image_features/<key>``): from a local open_clip
  checkpoint (``image_checkpoint`` + ``image_encoder``, e.g. ViT-L-14), or, on simshop, from the small open_clip
  config ``simshop-vit-tiny`` (2-layer ViT, width 256, 4 x 4 patches on 32 x 32 pictures) *frozen at random
  init* (``image_encoder_seed``); ``image_pretrain_epochs > 0`` trains it briefly CLIP-style on the catalogue's
  (image, title) pairs first. A dataset that ships features (``item_image_features``, SQID's CLIP ViT-L/14) is
  used as is: no encoder runs. The adaptor standardises the features with catalogue statistics and maps them
  through an MLP to one *visual token*. ``extra_costs`` reports extraction images/s and the cache size.
- **Stage 1, three lightweight experts**, each returning a ``width``-d vector:
  *VBert* - the visual token followed by the text's WordPiece tokens through a light BERT (``vbert_layers``);
  a query has no picture, so its visual slot holds a learned placeholder; *FtAtt* - fastText-style embeddings
  of the words and their letter trigrams (the ``*_hashed`` fields) pooled by attention with a learned
  importance per unit; *Light-BERT* - a 2-layer transformer over the WordPiece tokens (``lightbert_layers``).
  The experts are shared by the query and the item tower (one text space); gates and fusion MLPs are not.
- **Expert gate** (``fusion: gate``): an MLP over the experts' outputs and the context vector gives per-input
  softmax weights; the mixture is the weighted sum of the expert outputs. An unavailable expert (VBert without
  images) gets weight exactly 0. ``fusion: concat`` (ablation) feeds the concatenated outputs to the fusion
  MLP instead. ``MRSE.expert_weights(inputs, side)`` returns the weights, [B, 3] in ``EXPERTS`` order.
- **Stage 2, DSSM fusion**: an MLP (+ linear skip) maps the mixture plus the context (item: category embedding
  and, with ``image_in_fusion``, the visual token; query: the user profile) to the ``dim``-d, L2-normalised
  embedding. Scores are cosines; the faiss index stores one vector per item.
- **Multi-modal user profile** (query tower): the last ``profile_length`` items of ``hist_realtime`` (the
  user's clicks, orders and collects before this search), each represented by its title (mean token
  embedding), its picture (the shared adaptor) and its category, pooled by attention steered by the query
  (``profile_pooling: attention``) or averaged (``mean``).
- **Hybrid loss**: ``losses/hybrid.py`` (softmax with in-batch + sampled negatives, plus a hard-negative
  triplet term).

Assumptions (open in the paper; each is a config key): ``dim`` 128, expert ``width`` 64, 2 heads; gating =
per-input softmax gate (``fusion``, ``gate_temperature`` 1); the image enters as one *pooled* vector (the
tower's embedding plus the mean and std of its patch tokens, ``image_token_stats``), not as patch tokens, and
also directly into the item fusion (``image_in_fusion``, our addition: without it the gate starved VBert);
VBert 1 layer, Light-BERT 2; triplet margin 0.2 on the cosine distance, weight 0.5, softmax weight 1,
temperature 0.05, 128 sampled negatives (``loss.*``, ``data.n_random_negatives``); the hard negative is the
closest in-batch or sampled item of another query (``stage_negatives``: the closest unclicked item of the same
search); profile = last 20 real-time items, attention pooling, steering the query gate only
(``profile_path: gate``; ``both``, variant ``profile_both``, also adds it to the query vector through a
zero-initialised projection, which cost 0.8 points of recall@100; with ``fusion: concat`` there is no gate and
the profile is off, with a warning; switches tried and left off, as none changed recall:
``profile_null_slot``, ``profile_path: additive``, ``profile_detach``); the
simshop image tower is frozen at random init (linear probe on its features: colour 1.00, print style 0.65,
majority class 0.30).

Pretrained start (variant ``pretrained``; small real data such as Icecat): the WordPiece table from
all-MiniLM-L6-v2 (``pretrained_tokens``) and frozen MiniLM sentence features joined to both towers through
``PretrainedStart`` (``pretrained_sentence``), so the untrained model scores exactly as zero-shot MiniLM.

Input mapping: simshop - title tokens and hashed n-grams, category, 32 x 32 pictures (features extracted and
cached), ``hist_realtime``; SQID/ESCI with an ``image_features`` table - the precomputed CLIP vectors replace
the encoder; Icecat/ESCI without images - VBert is skipped (text experts only) and, without users, the profile.

Measured (3 seeds, simshop, the 2026-12-04 recipe; docs/models/mrse.md has every number): NDCG@10 0.941, above
every baseline (light_two_tower/default 0.931, p < 0.01 in every seed); on image_attr queries recall@100 0.956
vs 0.867 for ``text_only`` (+10.2%; recall@10 +28%), text_attr and broad unchanged; on simshop-alltext the
recall@100 gain vanishes (-0.02%). The other ablations are from the earlier recipe (``no_profile`` level,
``profile_both`` lower, ``concat`` lower, the triplet term neutral). 15.4M parameters, ~1,000 training pairs/s,
image features 96 images/s (one-off), cache 14.7 MB.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval_zoo.models.base import TwoTowerModel
from retrieval_zoo.models.components import (
    PretrainedStart,
    TokenEmbedding,
    l2_normalize,
    longest_first,
    masked_mean,
)
from retrieval_zoo.models.image_features import ImageEncoderSpec, cached_image_features
from retrieval_zoo.models.layers import (
    PositionalTransformer,
    position_table,
    transformer_encoder,
    trim_padding,
)

EXPERTS = ("vbert", "ftatt", "lightbert")
Fusion = Literal["gate", "concat"]
Pooling = Literal["attention", "mean"]
ProfilePath = Literal["both", "gate", "additive"]  # where the user profile enters the query tower
FUSIONS: tuple[str, ...] = get_args(Fusion)
POOLINGS: tuple[str, ...] = get_args(Pooling)
PROFILE_PATHS: tuple[str, ...] = get_args(ProfilePath)


@dataclass
class MRSEConfig:
    """The ``model:`` section of configs/mrse.yaml (each key documented there)."""

    dim: int = 128
    width: int = 64
    heads: int = 2
    vbert_layers: int = 1
    lightbert_layers: int = 2
    n_buckets: int = 200_000
    n_categories: int = 4096
    pretrained_tokens: bool = False
    fusion: Fusion = "gate"
    gate_temperature: float = 1.0
    use_image: bool = True
    image_encoder: str = "simshop-vit-tiny"
    image_checkpoint: str | None = None
    image_encoder_seed: int = 0
    image_pretrain_epochs: int = 0
    image_token_stats: bool = True
    image_in_fusion: bool = True
    item_token_dropout: float = 0.0
    use_profile: bool = True
    profile_length: int = 20
    profile_pooling: Pooling = "attention"
    profile_null_slot: bool = False
    profile_path: ProfilePath = "gate"
    profile_detach: bool = False
    pretrained_sentence: bool = False
    stage_negatives: bool = False


def word_dropout(ids: torch.Tensor, rate: float) -> torch.Tensor:
    """Turn a random share ``rate`` of the ids into padding (training only): a title word the model cannot
    count on makes it also read the picture, which is all it has when a title omits the colour."""
    return ids.masked_fill(torch.rand(ids.shape, device=ids.device) < rate, 0)


# -- the image side -------------------------------------------------------------------------------------------
class ImageAdaptor(nn.Module):
    """The trainable adaptor over frozen image features: one visual token of size ``width``.

    Features are first standardised per column with the catalogue's statistics (fixed buffers): encoders differ
    in scale, and a pooled vector concatenated with token statistics mixes scales within one vector.
    """

    def __init__(self, catalogue_features: torch.Tensor, width: int):
        super().__init__()
        features = catalogue_features.float()
        self.register_buffer("mean", features.mean(0))
        self.register_buffer("std", features.std(0).clamp(min=1e-6))
        self.net = nn.Sequential(nn.Linear(features.shape[1], 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features.float() - self.mean) / self.std)


# -- the three experts ----------------------------------------------------------------------------------------
class LightBert(nn.Module):
    """A small pre-norm transformer (GELU, feed-forward 2 x width, final LayerNorm; ``layers.PositionalTransformer``)
    over WordPiece ids, optionally after one leading (visual) token.

    Output: the mean of the text tokens' states, plus the leading token's state when there is one (so the
    visual token's information has its own path to the output rather than 1/L of a mean).
    """

    def __init__(self, tokens: TokenEmbedding, width: int, layers: int, heads: int, max_length: int = 128):
        super().__init__()
        self.tokens = tokens
        self.transformer = PositionalTransformer(
            position_table(max_length + 1, width, std=0.02),
            transformer_encoder(width, heads, layers, 2 * width, activation="gelu", final_norm=True))

    def forward(self, ids: torch.Tensor, lead: torch.Tensor | None = None) -> torch.Tensor:
        ids = trim_padding(ids)
        mask = ids > 0
        x = self.tokens(ids)
        if lead is None:
            return self.transformer.pooled(x, mask)  # an empty text's mean is zero
        x = torch.cat([lead.unsqueeze(1), x], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        states = self.transformer(x, mask)
        return states[:, 0] + masked_mean(states[:, 1:], mask[:, 1:])


class FastTextAttention(nn.Module):
    """FtAtt: embeddings of words and letter trigrams (fastText's subword units), pooled by attention."""

    def __init__(self, n_buckets: int, width: int):
        super().__init__()
        self.table = nn.Embedding(n_buckets, width, padding_idx=0)
        nn.init.normal_(self.table.weight, std=width**-0.5)
        self.score = nn.Linear(width, 1)  # a linear score of a unit's embedding = a learned importance per unit

    def forward(self, hashed: torch.Tensor) -> torch.Tensor:
        hashed = trim_padding(hashed)
        mask = hashed > 0
        # ids were hashed into the data's bucket count; folding keeps any table size valid (0 stays padding)
        vectors = self.table(torch.where(mask, 1 + hashed % (self.table.num_embeddings - 1), 0))
        scores = self.score(vectors).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # an empty text gives all -inf: zero vector
        return (weights.unsqueeze(-1) * vectors).sum(1)


class Experts(nn.Module):
    """The three lightweight experts, shared by both towers. ``forward`` -> [B, 3, width] in EXPERTS order."""

    def __init__(self, width: int, heads: int, vbert_layers: int, lightbert_layers: int, n_buckets: int,
                 pretrained_tokens: bool):
        super().__init__()
        tokens = TokenEmbedding(width, pretrained=pretrained_tokens)
        self.tokens = tokens
        self.vbert = LightBert(tokens, width, vbert_layers, heads)
        self.ftatt = FastTextAttention(n_buckets, width)
        self.lightbert = LightBert(tokens, width, lightbert_layers, heads)

    def forward(self, tokens: torch.Tensor, hashed: torch.Tensor, visual: torch.Tensor | None) -> torch.Tensor:
        outputs = [self.ftatt(hashed), self.lightbert(tokens)]
        vbert = self.vbert(tokens, visual) if visual is not None else torch.zeros_like(outputs[0])
        return torch.stack([vbert, *outputs], dim=1)

    def title_bag(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean token embedding of each row of ``ids`` [n, L] (for profile items: cheap, no transformer)."""
        table = self.tokens.table
        return self.tokens.project(F.embedding_bag(ids, table.weight, mode="mean", padding_idx=0))


# -- stage 2: gate and DSSM fusion ----------------------------------------------------------------------------
class GatedFusion(nn.Module):
    """Mixture of the expert outputs (per-input softmax gate, or concatenation) -> DSSM MLP -> unit vector."""

    def __init__(self, n_experts: int, width: int, dim: int, fusion: str, gate_temperature: float):
        super().__init__()
        self.fusion = fusion
        self.gate_temperature = gate_temperature
        self.gate = nn.Sequential(nn.Linear((n_experts + 1) * width, width), nn.Tanh(), nn.Linear(width, n_experts))
        mixed = width if fusion == "gate" else n_experts * width
        self.mlp = nn.Sequential(nn.Linear(mixed, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.skip = nn.Linear(mixed, dim, bias=False)
        self.context = nn.Linear(width, mixed, bias=False)

    def weights(self, outputs: torch.Tensor, available: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """[B, E] softmax weights; unavailable experts (``available`` [E] or [B, E] False) get exactly 0."""
        if self.fusion == "concat":  # no gate: report equal shares of the available experts
            shares = available.to(outputs.dtype).expand(len(outputs), -1)
            return shares / shares.sum(1, keepdim=True)
        logits = self.gate(torch.cat([outputs.flatten(1), context], dim=1)) / self.gate_temperature
        return torch.softmax(logits.masked_fill(~available, float("-inf")), dim=1)

    def forward(self, outputs: torch.Tensor, available: torch.Tensor, context: torch.Tensor,
                gate_context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``gate_context`` (default: ``context``) is what the gate sees next to the experts' outputs."""
        weights = self.weights(outputs, available, context if gate_context is None else gate_context)
        if self.fusion == "gate":
            mixed = (weights.unsqueeze(-1) * outputs).sum(1)
        else:
            mixed = (outputs * available.to(outputs.dtype).unsqueeze(-1)).flatten(1)
        mixed = mixed + self.context(context)
        return l2_normalize(self.mlp(mixed) + self.skip(mixed)), weights


# -- the user profile -----------------------------------------------------------------------------------------
class UserProfile(nn.Module):
    """The user's recently clicked items (title, image, category) pooled into one vector."""

    def __init__(self, width: int, length: int, pooling: str, null_slot: bool = False):
        super().__init__()
        self.length = length
        self.pooling = pooling
        self.null_slot = null_slot
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(width, width, bias=False)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """``items`` [B, L, width] with ``mask`` [B, L]; ``anchor`` [B, width] (the query) steers attention."""
        if self.pooling == "mean":
            return masked_mean(items, mask)
        if self.null_slot:
            # MGDSPR's prepended zero vector: attention may settle on "none of these" (score 0, value 0), so an
            # unrelated history dilutes towards nothing instead of being forced into the query
            items = torch.cat([items.new_zeros(len(items), 1, items.shape[-1]), items], dim=1)
            mask = torch.cat([mask.new_ones(len(mask), 1), mask], dim=1)
        scores = (self.key(items) @ self.query(anchor).unsqueeze(-1)).squeeze(-1) / math.sqrt(items.shape[-1])
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1).nan_to_num(0.0)
        return (weights.unsqueeze(-1) * items).sum(1)


# -- the towers -----------------------------------------------------------------------------------------------
def with_sentence(start: PretrainedStart | None, vector: torch.Tensor, inputs: dict[str, torch.Tensor],
                  field: str) -> torch.Tensor:
    """The tower's vector joined to frozen MiniLM sentence features (``pretrained_sentence``), renormalised."""
    return vector if start is None else l2_normalize(start(vector, inputs[field]))


class ItemTower(nn.Module):
    """The item side's own parts: its gate + DSSM fusion and (``pretrained_sentence``) its sentence start.

    The parts both towers share (experts, category table, image adaptor) are the model's: ``MRSE`` runs them and
    passes their outputs in (``MRSE.encode_items_with_weights``).
    """

    def __init__(self, config: MRSEConfig):
        super().__init__()
        self.fusion = GatedFusion(len(EXPERTS), config.width, config.dim, config.fusion, config.gate_temperature)
        self.sentence = PretrainedStart(config.dim) if config.pretrained_sentence else None

    def forward(self, inputs: dict[str, torch.Tensor], outputs: torch.Tensor, available: torch.Tensor,
                context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(item vectors [B, dim], expert weights [B, E]) from the experts' ``outputs`` [B, E, width], which of
        them are ``available`` [E], and the item's ``context`` [B, width] (category, and the visual token)."""
        vector, weights = self.fusion(outputs, available, context)
        return with_sentence(self.sentence, vector, inputs, "item_sentence"), weights


class QueryTower(nn.Module):
    """The query side's own parts: the visual placeholder, the user profile, its gate + DSSM fusion and
    (``pretrained_sentence``) its sentence start. The shared parts are the model's, as for ``ItemTower``."""

    def __init__(self, config: MRSEConfig):
        super().__init__()
        width = config.width
        self.profile_path = config.profile_path
        self.profile_detach = config.profile_detach
        self.visual_placeholder = nn.Parameter(torch.randn(width) * 0.02)  # a query has no picture
        self.profile = UserProfile(width, config.profile_length, config.profile_pooling, config.profile_null_slot)
        self.fusion = GatedFusion(len(EXPERTS), width, config.dim, config.fusion, config.gate_temperature)
        # The profile's additive path starts as a no-op: the query vector is the query's meaning first, and the
        # user's history moves it only as far as training finds that it helps (``profile_path`` says whether the
        # profile also, or only, informs the gate).
        nn.init.zeros_(self.fusion.context.weight)
        self.sentence = PretrainedStart(config.dim) if config.pretrained_sentence else None

    def forward(self, batch: dict[str, torch.Tensor], outputs: torch.Tensor, available: torch.Tensor,
                history: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(query vectors [B, dim], expert weights [B, E]) from the experts' ``outputs`` [B, E, width], which of
        them are ``available`` [E], and the user's ``history``: (profile items [B, L, width], their mask [B, L],
        the anchor [B, width] that steers the profile's attention), or None without a profile."""
        context = torch.zeros_like(outputs[:, 0])
        if history is not None:
            items, mask, anchor = history
            if self.profile_detach:
                # the history is read through the shared experts, table and adaptor, but trains only the profile
                items, anchor = items.detach(), anchor.detach()
            context = self.profile(items, mask, anchor)
        gate_context = torch.zeros_like(context) if self.profile_path == "additive" else context
        additive = torch.zeros_like(context) if self.profile_path == "gate" else context
        vector, weights = self.fusion(outputs, available, additive, gate_context)
        return with_sentence(self.sentence, vector, batch, "query_sentence"), weights


class MRSE(TwoTowerModel):
    """Multi-modal retrieval with lightweight experts, gates and user profiles (see the module docstring)."""

    required_fields = {"query_text", "query_hashed", "item_text", "item_hashed", "item_category"}
    optional_fields = {"item_image", "item_image_features", "user_history"}

    def __init__(self, config: MRSEConfig | None = None):
        super().__init__()
        config = config or MRSEConfig()
        if config.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{config.fusion}'; valid: {', '.join(FUSIONS)}")
        if config.profile_pooling not in POOLINGS:
            raise ValueError(f"unknown profile_pooling '{config.profile_pooling}'; valid: {', '.join(POOLINGS)}")
        if config.profile_path not in PROFILE_PATHS:
            raise ValueError(f"unknown profile_path '{config.profile_path}'; valid: {', '.join(PROFILE_PATHS)}")
        use_profile = config.use_profile
        if use_profile and config.fusion == "concat" and config.profile_path == "gate":
            # the gate is the profile's only way in and concatenation has none: say so instead of training it idle
            warnings.warn("MRSE: fusion 'concat' has no gate for the profile (profile_path 'gate'), so the user "
                          "profile is off; set profile_path=both to keep it", stacklevel=2)
            use_profile = False
        self.width = config.width
        self.use_image, self.use_profile = config.use_image, use_profile
        self.image_in_fusion = config.image_in_fusion
        self.item_token_dropout = config.item_token_dropout
        self.profile_length = config.profile_length
        self.image_spec = ImageEncoderSpec(name=config.image_encoder, checkpoint=config.image_checkpoint,
                                           seed=config.image_encoder_seed, pretrain_epochs=config.image_pretrain_epochs,
                                           token_stats=config.image_token_stats)
        self.experts = Experts(config.width, config.heads, config.vbert_layers, config.lightbert_layers,
                               config.n_buckets, config.pretrained_tokens)
        self.categories = nn.Embedding(config.n_categories, config.width, padding_idx=0)
        self.image_adaptor: ImageAdaptor | None = None  # built in prepare, once the feature size is known
        self.has_image = False
        self.catalog = None
        self.extra_costs: dict[str, Any] = {}
        self.query_tower = QueryTower(config)
        self.item_tower = ItemTower(config)
        # instance-level fields: variants that drop a modality do not build its inputs
        self.optional_fields = ({"item_image", "item_image_features"} if config.use_image else set()) | (
            {"user_history"} if use_profile else set()) | ({"stages"} if config.stage_negatives else set())
        if config.pretrained_sentence:
            self.required_fields = self.required_fields | {"query_sentence", "item_sentence"}

    # -- prepare: frozen image features, once --------------------------------------------------------------
    def prepare(self, datamodule) -> None:
        catalog = datamodule.catalog
        self.catalog = catalog
        if not self.use_image:
            return
        if "item_image_features" not in catalog.tensors and "item_image" in catalog.tensors:
            tokens = catalog.tensors.get("item_tokens")  # int64, as the image cache's keys were made with
            features, stats = cached_image_features(catalog.tensors["item_image"], self.image_spec,
                                                    None if tokens is None else tokens.long())
            catalog.add("item_image_features", torch.as_tensor(features))
            self.extra_costs = {"image_features_per_s": stats.images_per_s, "image_cache_mb": round(stats.cache_mb, 2),
                                "image_cache_hit": stats.cache_hit, "image_seconds": round(stats.seconds, 2)}
        elif "item_image_features" in catalog.tensors:
            self.extra_costs = {"image_features_per_s": None, "image_cache_mb": 0.0,
                                "image_source": "precomputed"}
        if "item_image_features" in catalog.tensors:
            self.has_image = True
            self.image_adaptor = ImageAdaptor(catalog.tensors["item_image_features"], self.width)

    def catalogue_order(self, catalog) -> np.ndarray:
        """Longest item texts first: the light BERTs trim each batch to its longest text, and on Icecat, whose
        texts run 12 to 64 tokens, catalogue order pads 2.3x the tokens this order does (every check encodes the
        catalogue)."""
        return longest_first(catalog.tensors["item_tokens"])

    # -- the towers: the shared parts run here, each tower's own parts in it ---------------------------------
    def encode_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode_queries_with_weights(batch)[0]

    def encode_items(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode_items_with_weights(inputs)[0]

    def encode_queries_with_weights(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(query vectors [B, dim], expert weights [B, E]): the shared experts over the query text (with the
        query tower's visual placeholder when the data has images) and the profile items, then the query tower."""
        tokens = batch["query_tokens"]
        visual = self.query_tower.visual_placeholder.expand(len(tokens), -1) if self.has_image else None
        outputs = self.experts(tokens, batch["query_hashed"], visual)
        available = self.available_experts(outputs.device)
        history = None
        if self.use_profile and "hist_realtime" in batch:
            anchor = (outputs * available.unsqueeze(-1)).sum(1) / available.sum()
            items, mask = self.history_items(batch["hist_realtime"][:, -self.profile_length:])
            history = (items, mask, anchor)
        return self.query_tower(batch, outputs, available, history)

    def encode_items_with_weights(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(item vectors [B, dim], expert weights [B, E]): the shared experts over the item text and picture,
        the category (+ visual token) context, then the item tower."""
        visual = self.visual_tokens(inputs)
        tokens, hashed = inputs["item_tokens"], inputs["item_hashed"]
        if self.training and self.item_token_dropout > 0:
            tokens, hashed = word_dropout(tokens, self.item_token_dropout), word_dropout(hashed, self.item_token_dropout)
        outputs = self.experts(tokens, hashed, visual)
        context = self.category_vectors(inputs["item_category"])
        if visual is not None and self.image_in_fusion:
            context = context + visual  # a direct path from the picture to the item vector, whatever the gate
        return self.item_tower(inputs, outputs, self.available_experts(outputs.device), context)

    # -- shared pieces -----------------------------------------------------------------------------------------
    def available_experts(self, device: torch.device) -> torch.Tensor:
        return torch.tensor([self.has_image, True, True], device=device)

    def visual_tokens(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.has_image:
            return None
        return self.image_adaptor(inputs["item_image_features"])

    def category_vectors(self, category: torch.Tensor) -> torch.Tensor:
        return self.categories(category % self.categories.num_embeddings)

    def history_items(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Profile items [B, L, width] (title bag + image token + category) and their mask [B, L]."""
        mask = history >= 0
        # histories of a batch overlap (popular items): represent each distinct item once
        distinct, position = history.clamp(min=0).unique(return_inverse=True)
        items = self.catalog.gather(distinct.cpu())
        device = history.device
        vectors = self.experts.title_bag(trim_padding(items["item_tokens"]).to(device))
        vectors = vectors + self.category_vectors(items["item_category"].to(device))
        if self.has_image:
            vectors = vectors + self.image_adaptor(items["item_image_features"].to(device))
        return vectors[position], mask

    # -- inspection ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def expert_weights(self, inputs: dict[str, torch.Tensor], side: str = "query") -> torch.Tensor:
        """Per-input expert weights [B, 3] (columns in EXPERTS order; each row sums to 1)."""
        encode = {"query": self.encode_queries_with_weights, "item": self.encode_items_with_weights}[side]
        return encode(inputs)[1]
