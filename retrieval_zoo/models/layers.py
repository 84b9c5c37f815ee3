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
import torch.nn.functional as F
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
    layer.self_attn.__class__ = PackedSelfAttention  # same parameters, same init: only the training path differs
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim) if final_norm else None,
                                 enable_nested_tensor=False)


class PackedSelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose training-time self-attention splits the packed q/k/v projection with one
    ``unbind`` instead of three ``select``s.

    torch's ``F.multi_head_attention_forward`` takes ``proj[0], proj[1], proj[2]``; in backward each select fills
    a zero tensor the size of the whole projection and the three are summed, a quarter of MRSE's training step on
    ESCI-length texts (torch.profiler: ``aten::fill_`` 23%). ``unbind`` backs into one stacked gradient. Every
    other operation is torch's, in torch's order (torch 2.14's slow path with ``need_weights=False``), so forward
    values and gradients are bitwise the same (tests/models/test_layers.py); any other call (eval, which takes
    torch's fused path, cross-attention, attention weights, an ``attn_mask``) goes to torch unchanged.
    """

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        packed = (query is key and key is value and self._qkv_same_embed_dim and self.batch_first
                  and query.dim() == 3 and self.bias_k is None and not self.add_zero_attn)
        if not (packed and self.training and torch.is_grad_enabled() and not need_weights and attn_mask is None
                and not is_causal):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        return self._self_attention(query.transpose(1, 0), key_padding_mask), None

    def _self_attention(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        length, batch, width = x.shape
        heads, head_width = self.num_heads, width // self.num_heads
        mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask", other_type=None,
                                 other_name="attn_mask", target_type=x.dtype)
        projected = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        projected = projected.unflatten(-1, (3, width)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
        q, k, v = (part.view(length, batch * heads, head_width).transpose(0, 1) for part in projected.unbind(0))
        if mask is not None:
            mask = mask.view(batch, 1, 1, length).expand(-1, heads, -1, -1).reshape(batch * heads, 1, length)
            mask = mask.unsqueeze(0) if mask.size(0) == 1 else mask.view(batch, heads, -1, length)
        q, k, v = (t.view(batch, heads, length, head_width) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, mask, self.dropout if self.training else 0.0, False)
        out = out.permute(2, 0, 1, 3).reshape(batch * length, width)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        return out.view(length, batch, out.size(1)).transpose(1, 0)


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
