"""In-batch softmax with temperature plus MGDSPR's relevance-improving mixed hard negatives.

Li et al., "Embedding-based Product Retrieval in Taobao Search", KDD 2021 (arXiv 2106.09297), section on the
loss. Two changes to the plain in-batch softmax (``losses/softmax.py``, whose ``in_batch_logits`` this reuses,
DDP gathering and duplicate masking included):

1. **Temperature** tau on the logits. The paper's logits are *unnormalised* inner products, so a large tau
   (tau = 2) flattens the softmax and keeps the model from over-fitting noisy click labels.
2. **Mixed hard negatives.** For each (query, positive) the top-N negatives by score, I_hard, are mixed with the
   positive in embedding space, I_mix = a * i_pos + (1 - a) * I_hard with a ~ U(a_low, a_high) drawn per
   negative, and the mixed items join the *same* softmax denominator (one loss, no extra weight). A mixed item
   sits between the positive and a confusing negative, so the model must push the positive further out: it buys
   relevance at a small cost in recall.

Because scores are inner products, q . I_mix = a * (q . i_pos) + (1 - a) * (q . I_hard): the mixed logits are
computed exactly from the logit matrix, without building the mixed vectors, and gradients flow to the query,
the positive and the hard negative just as if the vectors had been built (the test suite checks this identity).
That also keeps the loss valid under DDP, where the negatives are other ranks' positives.

Scaling N: the paper takes N = 684 hard negatives from a billion-item pool and a large sampled-negative set. Here
the candidates are the B - 1 in-batch negatives (+ ``random_items`` if the data config samples them), so N is a
fraction of that candidate count: ``hard_fraction = 0.1`` picks 26 of 255 at batch 256.

Mined hard negatives (``hard_items``, data/negatives.py; ``use_hard_negatives``, default true) join the logits as
row-specific columns (``losses/softmax.py``'s ``batch_logits``), so they are also candidates for the top-N
mixing: N is then a fraction of B - 1 + R + K candidates. ``pos_weight`` (graded positives) makes both cross-
entropies weighted means.

Inputs: query vectors [B, d], positive item vectors [B, d], the batch (``pos_item``; ``random_items`` when
``use_random_negatives`` and the data config samples them; optional ``hard_items``, ``pos_weight``), and the
``ItemVectors`` with the sampled and hard items' vectors (``extra_vectors`` says which; the training module
encodes them).

Example::

    loss = MixedHardNegativesLoss(temperature=2.0, hard_fraction=0.1)
    value = loss(q, p, {"pos_item": torch.arange(len(q))})["loss"]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from retrieval_zoo.losses.softmax import InBatchSoftmaxLoss, ItemVectors, batch_logits, softmax_cross_entropy


def n_hard_negatives(n_candidates: int, fraction: float) -> int:
    """How many hard negatives a row gets: ``fraction`` of its candidate negatives, at least 1 if fraction > 0."""
    if fraction <= 0 or n_candidates <= 0:
        return 0
    return min(n_candidates, max(1, math.ceil(fraction * n_candidates)))


def mixed_hard_negative_logits(logits: torch.Tensor, targets: torch.Tensor, n_hard: int,
                               alpha: torch.Tensor) -> torch.Tensor:
    """Logits of the mixed items a * i_pos + (1 - a) * I_hard for each row's ``n_hard`` top-scored negatives.

    ``logits`` [B, C] (each row's target column ``targets[b]`` is its positive; masked columns are -inf),
    ``alpha`` [B, n_hard]. Hard negatives are chosen on detached scores (selection is not differentiated);
    a pick that is a masked column (fewer real negatives than ``n_hard``) gives a -inf mixed logit.
    """
    rows = torch.arange(len(logits), device=logits.device)
    positive = logits[rows, targets]
    candidates = logits.detach().clone()
    candidates[rows, targets] = float("-inf")  # the positive is never its own hard negative
    picked, columns = candidates.topk(n_hard, dim=1)
    hard = logits.gather(1, columns)
    mixed = alpha * positive[:, None] + (1 - alpha) * hard
    return mixed.masked_fill(torch.isinf(picked), float("-inf"))


class MixedHardNegativesLoss(nn.Module):
    """Softmax cross-entropy over in-batch negatives + mixed hard negatives, logits divided by ``temperature``.

    ``use_random_negatives`` / ``use_hard_negatives`` (default true): take the batch's ``random_items`` /
    mined ``hard_items`` as extra negatives (and mixing candidates) when present.
    """

    def __init__(self, temperature: float = 2.0, hard_fraction: float = 0.1, mix_low: float = 0.4,
                 mix_high: float = 0.6, use_random_negatives: bool = True, use_hard_negatives: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= hard_fraction <= 1:
            raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
        if not 0 <= mix_low <= mix_high <= 1:
            raise ValueError(f"need 0 <= mix_low <= mix_high <= 1, got {mix_low}, {mix_high}")
        self.temperature = temperature
        self.hard_fraction = hard_fraction
        self.mix_low = mix_low
        self.mix_high = mix_high
        self.use_random_negatives = use_random_negatives
        self.use_hard_negatives = use_hard_negatives

    def sample_alpha(self, rows: int, n_hard: int, device: torch.device) -> torch.Tensor:
        """a ~ U(mix_low, mix_high), one draw per (query, hard negative)."""
        return torch.empty(rows, n_hard, device=device).uniform_(self.mix_low, self.mix_high)

    extra_vectors = InBatchSoftmaxLoss.extra_vectors  # the same sampled and hard items

    def forward(self, queries: torch.Tensor, positives: torch.Tensor, batch: dict[str, torch.Tensor],
                extra: ItemVectors | None = None) -> dict[str, torch.Tensor]:
        logits, targets = batch_logits(queries, positives, batch, extra)
        weights = batch.get("pos_weight")
        in_batch = softmax_cross_entropy(logits, targets, self.temperature, weights)
        n_hard = n_hard_negatives(logits.shape[1] - 1, self.hard_fraction)
        if n_hard == 0:
            return {"loss": in_batch}
        alpha = self.sample_alpha(len(logits), n_hard, logits.device)
        mixed = mixed_hard_negative_logits(logits, targets, n_hard, alpha)
        loss = softmax_cross_entropy(torch.cat([logits, mixed], dim=1), targets, self.temperature, weights)
        # the in-batch part alone is logged so runs with and without mixing can be compared on one scale
        return {"loss": loss, "in_batch_loss": in_batch.detach()}
