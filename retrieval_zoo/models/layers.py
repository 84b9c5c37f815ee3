"""Layers shared by the models that run a Transformer over padded token sequences (MGDSPR, MMSE, MRSE).

Each of those models once wrote the same few steps itself: cut the columns that are padding in every row, add
learned positions, run ``nn.TransformerEncoder`` with a key padding mask that leaves an all-padding row one
attendable slot (otherwise its softmax is over nothing and gives NaN), then mean-pool the real positions. The
three copies differed only in their settings (feed-forward width, pre- or post-norm, activation, final norm,
how the positions are stored and initialised), so these are arguments here:

- ``transformer_encoder``: the encoder stack with those settings;
- ``attendable``: the key mask with position 0 opened in all-padding rows (also used by MGDSPR's own
  self-attention over behaviour sets);
- ``trim_padding``: drop the trailing all-padding columns (a query is a few tokens of a wide frame, and
  attention costs grow with the frame);
- ``PositionalTransformer``: learned positions + encoder over [B, L, d] with its padding mask, and ``pooled``,
  the mean of the real positions' states (``components.masked_mean``).

The positions are passed in (``learned_positions``, a plain parameter, or ``position_table``, an
``nn.Embedding``) rather than built inside, because a model's parameters keep their creation order (random
initialisation draws from the generator in that order), their registration order and their kind (tables and
dense layers may sit in different optimiser groups, ``models/base.py``): results stay exactly what each model
gave before the layers were shared.
"""

from __future__ import annotations

import torch
from torch import nn

from retrieval_zoo.models.components import masked_mean


def attendable(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` [B, L] with position 0 opened in all-padding rows, so a self-attention over them stays finite.

    What those rows produce must not be used: callers pool or attend with the original ``mask``.
    """
    empty = ~mask.any(dim=1)
    if not empty.any():
        return mask
    mask = mask.clone()
    mask[empty, 0] = True
    return mask


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Drop the trailing columns that are padding (id <= 0) in every row; keep at least one column."""
    used = (ids > 0).any(0).nonzero()
    return ids[:, : int(used.max()) + 1 if len(used) else 1]


def transformer_encoder(dim: int, heads: int, layers: int, feedforward: int, dropout: float = 0.0,
                        activation: str = "relu", norm_first: bool = True, final_norm: bool = False) -> nn.Module:
    """``layers`` Transformer encoder layers (batch first), optionally followed by a LayerNorm."""
    layer = nn.TransformerEncoderLayer(dim, heads, feedforward, dropout, activation=activation, batch_first=True,
                                       norm_first=norm_first)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim) if final_norm else None,
                                 enable_nested_tensor=False)


def learned_positions(length: int, dim: int, std: float) -> nn.Parameter:
    """[length, dim] position embeddings N(0, std^2) as a plain parameter (a dense layer to the optimiser)."""
    return nn.Parameter(torch.randn(length, dim) * std)


def position_table(length: int, dim: int, std: float) -> nn.Embedding:
    """[length, dim] position embeddings as an ``nn.Embedding`` (an embedding table to the optimiser),
    re-initialised N(0, std^2)."""
    table = nn.Embedding(length, dim)
    nn.init.normal_(table.weight, std=std)
    return table


class PositionalTransformer(nn.Module):
    """Learned positions + a Transformer encoder over a padded sequence [B, L, d] (see the module docstring).

    ``positions``: from ``learned_positions`` or ``position_table`` (at least L rows); ``encoder``: from
    ``transformer_encoder``, built after the positions where a model built them in that order.
    """

    def __init__(self, positions: nn.Parameter | nn.Embedding, encoder: nn.Module):
        super().__init__()
        self.positions = positions
        self.encoder = encoder

    def position_rows(self, length: int) -> torch.Tensor:
        table = self.positions.weight if isinstance(self.positions, nn.Embedding) else self.positions
        return table[:length]

    def states(self, embedded: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """States [B, L, d] of ``embedded`` + positions; ``mask`` [B, L] (True = real) hides padding from the keys
        (None: every position is real)."""
        hidden = embedded + self.position_rows(embedded.shape[1])
        return self.encoder(hidden, src_key_padding_mask=None if mask is None else ~attendable(mask))

    def pooled(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mean of the real positions' states [B, d] (zero for an all-padding row)."""
        return masked_mean(self.states(embedded, mask), mask)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.states(embedded, mask)
