"""Stage ranking loss: the *local* comparison of MMSE (Wang et al., WWW 2023 companion, arXiv 2303.11009).

For one query, the items of its multi-stage list (``retrieval_zoo/data/stages.py``: ordered 3 > clicked 2 >
unclicked 1 > random 0) must be scored in the order of their level. The retrieval loss (softmax over in-batch and
random items) teaches the *global* comparison "this item against the whole pool"; this loss teaches the order
*within* one query's exposure list, which the pool-wide softmax barely sees (exposed items are a handful among
thousands of negatives).

Each raw level gets a gain (``level_gains``, indexed by level: random, unclicked, clicked, ordered); two items
of a query form a pair when their gains differ, so ``level_gains: [0, 0, 1, 1]`` collapses the four stages into
"engaged vs the rest" (the ``single_level`` ablation). Three forms, the ``mode`` key (the paper does not publish
which one MMSE uses):

- ``pairwise_logistic`` (default): RankNet-style ``softplus(-(s_i - s_j) / temperature)`` over every pair with
  gain_i > gain_j, weighted by the gain gap (``pair_weighting: gain_gap``, LambdaRank-like) or uniformly;
- ``pairwise_margin``: hinge ``relu(margin * (gain_i - gain_j) - (s_i - s_j))``: a larger level gap asks for a
  larger score gap;
- ``listwise``: ListNet-style cross-entropy between the softmax of ``s / temperature`` over the list and the
  target distribution proportional to the gains (lists whose gains are all zero are skipped).

Inputs: scores float [B, S] (query-item similarities) and levels int [B, S] (-1 = padding, masked out).
Pairwise losses are averaged over the (weighted) pairs of the whole batch; a batch without pairs gives 0.

Example::

    loss = StageRankingLoss(mode="pairwise_logistic", temperature=1.0)
    loss(torch.tensor([[0.5, 0.2, 0.0]]), torch.tensor([[3, 1, 0]]))
    # (2 * softplus(-0.3) + 3 * softplus(-0.5) + 1 * softplus(-0.2)) / 6
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("pairwise_logistic", "pairwise_margin", "listwise")
PAIR_WEIGHTINGS = ("gain_gap", "uniform")


def level_to_gain(levels: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Gain of each item (padding -1 gets gain 0; callers mask it)."""
    return gains.to(levels.device)[levels.clamp(min=0)]


def pairwise_stage_loss(scores: torch.Tensor, levels: torch.Tensor, gains: torch.Tensor, mode: str,
                        temperature: float, margin: float, pair_weighting: str) -> torch.Tensor:
    """Weighted mean over the pairs (i, j) of one list with gain_i > gain_j (see the module docstring)."""
    valid = levels >= 0
    gain = level_to_gain(levels, gains)
    gap = gain[:, :, None] - gain[:, None, :]                       # [B, S, S]: gain_i - gain_j
    is_pair = valid[:, :, None] & valid[:, None, :] & (gap > 0)
    difference = scores[:, :, None] - scores[:, None, :]            # s_i - s_j
    if mode == "pairwise_logistic":
        per_pair = F.softplus(-difference / temperature)
    else:
        per_pair = F.relu(margin * gap - difference)
    weight = (gap if pair_weighting == "gain_gap" else torch.ones_like(gap)) * is_pair
    total = weight.sum()
    if total <= 0:
        return scores.sum() * 0.0  # keeps the graph (and DDP) happy when a batch has no pair
    return (per_pair * weight).sum() / total


def listwise_stage_loss(scores: torch.Tensor, levels: torch.Tensor, gains: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """ListNet cross-entropy against targets proportional to the gains, averaged over lists with a gain."""
    valid = levels >= 0
    gain = level_to_gain(levels, gains) * valid
    mass = gain.sum(1)
    rows = mass > 0
    if not rows.any():
        return scores.sum() * 0.0
    target = gain[rows] / mass[rows, None]
    log_p = torch.log_softmax((scores[rows] / temperature).masked_fill(~valid[rows], float("-inf")), dim=1)
    # padding has target 0 and log_p -inf: take the product only where valid, so 0 * -inf never appears
    return -(target * log_p.masked_fill(~valid[rows], 0.0)).sum(1).mean()


class StageRankingLoss(nn.Module):
    """Ranking loss over the stage levels of one query's items (see the module docstring)."""

    def __init__(self, mode: str = "pairwise_logistic", level_gains: Sequence[float] = (0.0, 1.0, 2.0, 3.0),
                 temperature: float = 0.05, margin: float = 0.05, pair_weighting: str = "gain_gap"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown ranking mode '{mode}'; valid modes: {', '.join(MODES)}")
        if pair_weighting not in PAIR_WEIGHTINGS:
            raise ValueError(f"unknown pair_weighting '{pair_weighting}'; valid: {', '.join(PAIR_WEIGHTINGS)}")
        if len(level_gains) != 4:
            raise ValueError(f"level_gains needs 4 values (random, unclicked, clicked, ordered), got {level_gains}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.mode = mode
        self.temperature = temperature
        self.margin = margin
        self.pair_weighting = pair_weighting
        self.register_buffer("gains", torch.tensor([float(g) for g in level_gains]), persistent=False)

    def forward(self, scores: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        if self.mode == "listwise":
            return listwise_stage_loss(scores, levels, self.gains, self.temperature)
        return pairwise_stage_loss(scores, levels, self.gains, self.mode, self.temperature, self.margin,
                                   self.pair_weighting)
