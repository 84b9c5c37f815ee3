"""Losses, one per file, registered explicitly by name (the ``loss.name`` key of a model config)."""

from __future__ import annotations

from torch import nn

from retrieval_zoo.losses.hybrid import HybridLoss
from retrieval_zoo.losses.mixed_hard_negatives import MixedHardNegativesLoss
from retrieval_zoo.losses.multi_grained import MultiGrainedLoss
from retrieval_zoo.losses.softmax import InBatchSoftmaxLoss

LOSSES: dict[str, type[nn.Module]] = {
    "softmax": InBatchSoftmaxLoss,
    "mixed_hard_negatives": MixedHardNegativesLoss,
    "multi_grained": MultiGrainedLoss,
    "hybrid": HybridLoss,
}


def build_loss(name: str, **kwargs) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; valid losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)


__all__ = ["LOSSES", "InBatchSoftmaxLoss", "build_loss"]
