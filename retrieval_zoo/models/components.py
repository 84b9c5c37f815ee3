"""Building blocks shared by several models: pretrained starts, pooling, padding masks.

Pretrained starts (foundation issue): on small real data towers trained from scratch lose badly, so every
model's text components can start from all-MiniLM-L6-v2 — its WordPiece token embeddings as the embedding
table (``TokenEmbedding(pretrained=True)``) and/or its frozen sentence features as an extra input
(``SentenceAdapter`` over the ``query_sentence`` / ``item_sentence`` fields; ``PretrainedStart`` joins it to
a tower's own output so the tower starts as zero-shot MiniLM).

The start is whatever ``model.encoder`` names (default all-MiniLM-L6-v2): these blocks read the encoder active
while the model is built (``text.using_encoder``, entered by ``build_model``) and take their widths from it, so a
768-d encoder works where the default's 384 used to be assumed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval_zoo.data import text


def pretrained_token_table(encoder: str | None = None) -> torch.Tensor:
    """The encoder's input-token embedding table ([30522, 384] for all-MiniLM-L6-v2), a copy of its own for each
    caller: ``nn.Embedding.from_pretrained`` trains the tensor it is given in place, and a shared one would carry a
    trained model's table into the next model's start (the next fold's, seed's or row's in one process)."""
    return _token_table_at(text.pretrained_model_path(encoder)).clone()


@lru_cache(maxsize=2)
def _token_table_at(path: str) -> torch.Tensor:
    transformer = text.sentence_transformer(path)[0].auto_model
    return transformer.get_input_embeddings().weight.detach().clone()


class TokenEmbedding(nn.Module):
    """Subword-id embeddings of size ``dim``; with ``pretrained`` the encoder's table, projected to ``dim``."""

    def __init__(self, dim: int, pretrained: bool = False, freeze_pretrained: bool = False):
        super().__init__()
        self.pretrained = pretrained
        if pretrained:
            table = pretrained_token_table()
            self.table = mark_pretrained(nn.Embedding.from_pretrained(
                table, freeze=freeze_pretrained, padding_idx=text.PAD_ID))
            # the table's own width (the transformer's hidden size), which may differ from the sentence width
            self.project = nn.Linear(table.shape[1], dim, bias=False)
        else:
            self.table = nn.Embedding(text.vocab_size(), dim, padding_idx=text.PAD_ID)
            nn.init.normal_(self.table.weight, std=dim**-0.5)
            self.project = nn.Identity()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.table(ids))


def padding_mask(ids: torch.Tensor) -> torch.Tensor:
    """True where ``ids`` is a real token (WordPiece pad id 0, item-index pad -1)."""
    return ids > 0 if ids.dtype != torch.bool else ids


def longest_first(ids: torch.Tensor, pad_id: int = 0) -> np.ndarray:
    """Row order by descending text length (ties in row order), for ``TwoTowerModel.catalogue_order``: a tower
    that trims each batch to its longest text (as sentence-transformers' ``encode`` sorts) then pads little."""
    lengths = (ids != pad_id).sum(1).numpy()
    return np.argsort(-lengths, kind="stable")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``values`` [B, L, d] where ``mask`` [B, L]; zero for an all-padding row."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def shared_projection(dim: int, width: int | None = None) -> torch.Tensor:
    """[dim, width]: the first ``dim`` rows of one fixed orthogonal matrix (the identity when dim = width;
    width defaults to the active encoder's, ``text.pretrained_dim()``).

    Every adapter starts from this same matrix, so a query adapter and an item adapter start in one space.
    """
    width = width or text.pretrained_dim()
    if dim >= width:
        return torch.eye(dim, width)
    basis, _ = torch.linalg.qr(torch.randn(width, width, generator=torch.Generator().manual_seed(0)))
    return basis[:dim].contiguous()


def mark_pretrained(module: nn.Module) -> nn.Module:
    """Flag ``module`` as carrying the pretrained start: its parameters train at ``optimizer.pretrained_lr``.

    Why: a few hundred real training pairs at the new layers' learning rate wash out MiniLM's geometry in the
    first steps; the pretrained weights move gently while the new ones learn at full speed (ULMFiT-style
    discriminative learning rates, as sentence-transformers users get from a separate head learning rate).
    """
    module.carries_pretrained_start = True
    return module


def pretrained_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters of every module flagged by ``mark_pretrained``."""
    return {id(p) for m in model.modules() if getattr(m, "carries_pretrained_start", False)
            for p in m.parameters()}


class SentenceAdapter(nn.Module):
    """A small trainable adapter over frozen sentence features (the encoder's width: 384 for MiniLM) that starts
    as the frozen encoder.

    ``skip`` starts as ``shared_projection`` and the residual MLP's output layer at zero, so at step 0 a query
    and an item score exactly as the frozen vectors projected to ``dim`` (the identity at dim = the width).
    Independently initialised adapters start the two towers in unrelated spaces, which a few hundred training
    pairs (Icecat folds) never align: measured, a pretrained-start row fell far below zero-shot MiniLM.
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * dim
        width = text.pretrained_dim()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.skip = nn.Linear(width, dim, bias=False)
        with torch.no_grad():
            self.skip.weight.copy_(shared_projection(dim, width))
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
        # the whole adapter is the start, so it trains at optimizer.pretrained_lr: at the new layers' Adam rate its
        # zero-initialised 2*dim-wide output layer reached outputs as large as the MiniLM vector within ~20 steps
        # and every Icecat fold fell below its start on valid
        mark_pretrained(self)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.skip(features) + self.net(features)


class PretrainedStart(nn.Module):
    """``gate * normalize(own) + adapter(sentence)``: a tower's own output joined to frozen sentence features.

    The gate is learned and starts at 0, so the tower starts as zero-shot MiniLM (``SentenceAdapter``) and lets
    its own, randomly initialised part in only as far as training finds it useful; added at full weight, that
    random part buries the pretrained signal when there are few training pairs. The own part is L2-normalised
    first so the gate alone sets its weight: unnormalised, MGDSPR's own vector (id + title, norm ~11) outweighed
    the unit-norm MiniLM part 20 to 1 as soon as the gate moved.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.adapter = SentenceAdapter(dim)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, own: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.gate * F.normalize(own, dim=-1) + self.adapter(sentence)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, dim=-1)


SENTENCE_FIELDS = {"query_sentence", "item_sentence"}


def uses_encoder(model: nn.Module) -> bool:
    """Whether a built model reads ``model.encoder``: its frozen sentence vectors, or weights copied from it (a
    pretrained start, a fine-tuned transformer tower). Its board row names the encoder only then."""
    if not isinstance(model, nn.Module):  # BM25: a retriever object, no encoder
        return False
    fields = set(getattr(model, "required_fields", ())) | set(getattr(model, "optional_fields", ()))
    if fields & SENTENCE_FIELDS:
        return True
    from retrieval_zoo.models.minilm import MiniLMEncoder

    return any(getattr(m, "carries_pretrained_start", False) or isinstance(m, MiniLMEncoder) for m in model.modules())
