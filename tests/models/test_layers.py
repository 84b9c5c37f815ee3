"""The shared Transformer layers: PackedSelfAttention is nn.MultiheadAttention to the bit, only faster to train."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from retrieval_zoo.models.layers import PackedSelfAttention, transformer_encoder


def plain_twin(encoder: nn.TransformerEncoder) -> nn.TransformerEncoder:
    """The same encoder, weights and all, with torch's own self-attention."""
    twin = copy.deepcopy(encoder)
    for layer in twin.layers:
        layer.self_attn.__class__ = nn.MultiheadAttention
    return twin


def padded_batch(seed: int, batch: int = 33, length: int = 17, width: int = 64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, width, generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    padding = torch.arange(length)[None, :] >= lengths[:, None]  # True = padding, as TransformerEncoder takes it
    return x, padding


@pytest.mark.parametrize("norm_first, activation", [(True, "gelu"), (False, "relu")])
def test_packed_self_attention_trains_bitwise_as_torchs(norm_first, activation):
    torch.manual_seed(0)
    ours = transformer_encoder(64, 2, 2, 128, activation=activation, norm_first=norm_first, final_norm=True)
    assert all(isinstance(layer.self_attn, PackedSelfAttention) for layer in ours.layers)
    theirs = plain_twin(ours)
    x, padding = padded_batch(1)
    outputs, grads = [], []
    for encoder in (ours, theirs):
        encoder.train()
        inputs = x.clone().requires_grad_(True)
        out = encoder(inputs, src_key_padding_mask=padding)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        outputs.append(out.detach())
        grads.append([inputs.grad, *(p.grad for p in encoder.parameters())])
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[1], strict=True))


def test_eval_and_other_calls_take_torchs_own_path():
    torch.manual_seed(0)
    ours = transformer_encoder(64, 2, 1, 128).eval()
    theirs = plain_twin(ours).eval()
    x, padding = padded_batch(2)
    with torch.no_grad():
        assert torch.equal(ours(x, src_key_padding_mask=padding), theirs(x, src_key_padding_mask=padding))
    attention = ours.layers[0].self_attn.train()
    _, weights = attention(x, x, x, need_weights=True)  # attention weights asked for: torch's path gives them
    assert weights is not None and weights.shape == (33, 17, 17)


def test_the_same_seed_builds_the_same_parameters_as_before():
    torch.manual_seed(0)
    ours = transformer_encoder(64, 2, 2, 128)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 2, 128, 0.0, batch_first=True, norm_first=True)
    theirs = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True))
