"""The Lightning data module every model trains from.

It builds the item catalogue and the query units once (only the fields the model asks for), mines the
multi-stage lists (stages.py), and serves batches of training examples, one example per (unit, positive item):

- behaviour data (searches + interactions): positives are the train searches' clicked or ordered items;
- label-only data: positives are the train queries' items with the configured labels (``positive_labels``,
  E and S by default).

Positives are graded: each example has a weight, ``positive_weights[label]`` on label data (E 1.0, S 0.5 by
default: a substitute is a positive, but a weaker one), 1.0 for every clicked or ordered item of behaviour data.
The losses take a weighted mean of the per-example cross-entropy (losses/softmax.py).

A batch is a dict: the unit's query-side tensors (features.py), ``pos_item`` int64 [B] (catalogue indices),
``pair_unit`` int64 [B] (each example's unit index: the losses mask a unit's other positives, which are
positives rather than negatives; on label data a query has ~14 judged E/S items, so a batch of a few hundred
pairs otherwise holds about 13 false negatives per row), ``pos_weight`` float32 [B] (the example weights), ``random_items`` int64 [n_random_negatives] (shared sampled
negatives, when asked for), in training batches ``hard_items`` int64 [B, hard_negatives.per_example] (mined hard
negatives of each example's query, negatives.py, sampled afresh each batch; -1 = padding; absent when
``per_example`` is 0, and from validation batches, since valid queries are never mined), and with the ``stages``
field ``stage_items`` / ``stage_levels`` int64 [B, stage_list_size] (-1 = padding; levels as in stages.py, random
items at level 0). Item features are gathered by the model from the catalogue (``RetrievalModule.item_inputs``),
so each batch carries item indices only. The hard negatives are mined on the first ``train_dataloader`` call, so
a retriever that never trains (BM25, zero-shot MiniLM) never pays for it.

With ``group_by_unit`` (for models whose query tower is the cost, e.g. MGDSPR's behaviour encoders) an epoch
visits the units in a fresh random order with each unit's examples side by side, and a batch also carries
``query_batch`` (the query-side tensors of its distinct units, each once) and ``query_row`` int64 [B] (each
example's row in it): the model encodes every search once. Under a distributed
sampler (DDP) Lightning re-shards the examples, which splits some groups: still correct, only less is shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset
from retrieval_zoo.data.features import (
    FeatureSettings,
    ItemCatalog,
    QueryUnits,
    build_catalog,
    build_units,
)
from retrieval_zoo.data.negatives import HardNegativeSettings, MinedLists, mine_hard_negatives
from retrieval_zoo.data.stages import LABEL_TO_LEVEL, StageLists, mine_from_labels, mine_from_logs

POSITIVE_LABEL_SETS = ({"E"}, {"E", "S"})


@dataclass
class DataSettings:
    """The ``data`` section of a model config (every key documented in the model YAMLs)."""

    batch_size: int = 256
    eval_batch_size: int = 1024
    n_random_negatives: int = 0
    stage_list_size: int = 12
    stage_random_items: int = 4
    positive_labels: list[str] = field(default_factory=lambda: ["E", "S"])
    positive_weights: dict[str, float] = field(default_factory=lambda: {"E": 1.0, "S": 0.5})
    max_train_examples: int | None = None
    group_by_unit: bool = False
    min_steps_per_epoch: int = 8
    hard_negatives: HardNegativeSettings = field(default_factory=HardNegativeSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)

    def __post_init__(self) -> None:
        # the runner passes the YAML's nested sections as plain mappings
        self.hard_negatives = HardNegativeSettings.of(self.hard_negatives)
        if isinstance(self.features, Mapping):
            self.features = FeatureSettings(**self.features)
        check_positive_settings(self.positive_labels, self.positive_weights)


def check_positive_settings(labels: list[str], weights: Mapping[str, float]) -> None:
    """One-line errors for positive labels other than [E] / [E, S] or a used label without a positive weight."""
    if set(labels) not in POSITIVE_LABEL_SETS:
        raise DatasetError(f"data.positive_labels must be [E] or [E, S], got {sorted(set(labels))}")
    missing = [label for label in labels if label not in weights]
    if missing:
        raise DatasetError(f"data.positive_weights lacks {missing}; give every positive label a weight, "
                           f"e.g. {{E: 1.0, S: 0.5}}")
    bad = {label: w for label, w in weights.items() if label not in ("E", "S") or not float(w) > 0}
    if bad:
        raise DatasetError(f"data.positive_weights must map E and/or S to weights > 0, got {bad}")


class Examples(NamedTuple):
    """Training (or validation) examples: unit, positive item and weight of each."""

    units: np.ndarray
    items: np.ndarray
    weights: np.ndarray


class RetrievalDataModule(pl.LightningDataModule):
    def __init__(self, dataset: ProductSearchDataset, fields: set[str], settings: DataSettings | None = None,
                 seed: int = 0):
        super().__init__()
        self.dataset = dataset
        self.fields = set(fields)
        self.settings = settings or DataSettings()
        self.seed = seed
        self.catalog: ItemCatalog | None = None
        self.units: QueryUnits | None = None
        self.stages: StageLists | None = None
        self._hard_negatives: MinedLists | None = None

    # -- building -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.catalog is not None:
            return
        features = self.settings.features
        self.catalog = build_catalog(self.dataset, self.fields, features)
        self.units = build_units(self.dataset, self.fields, features, self.catalog)
        self.stages = self._mine_stages()
        self.train_pairs = self._pairs("train")
        self.valid_pairs = self._pairs("valid")
        if len(self.train_pairs[0]) == 0:
            raise DatasetError(f"dataset '{self.dataset.name}' has no training positives in its train split")

    def _mine_stages(self) -> StageLists:
        if self.dataset.has_behaviour:
            return mine_from_logs(self.dataset.interactions, self.units.unit_ids, self.catalog.product_ids)
        return mine_from_labels(self.dataset.judgments, self.units.unit_ids, self.catalog.product_ids)

    def _positive_level(self) -> int:
        if self.dataset.has_behaviour:
            return 2  # clicked or ordered
        return min(LABEL_TO_LEVEL[label] for label in self.settings.positive_labels)

    def _pairs(self, split: str) -> Examples:
        level = self._positive_level()
        units, items = self.stages.pairs_at_least(level)
        # pairs_at_least keeps the stage items with level >= level in CSR order: the same mask gives their levels
        weights = self._weights(self.stages.levels[self.stages.levels >= level])
        keep = self.units.splits[units] == split
        examples = Examples(units[keep], items[keep], weights[keep])
        limit = self.settings.max_train_examples
        if split == "train" and limit is not None and len(examples.units) > limit:
            chosen = np.sort(np.random.default_rng(self.seed).choice(len(examples.units), limit, replace=False))
            examples = Examples(*(array[chosen] for array in examples))
        return examples

    def _weights(self, levels: np.ndarray) -> np.ndarray:
        """Each positive's weight: 1 on behaviour data, else that of its label (level 3 = E, level 2 = S)."""
        if self.dataset.has_behaviour:
            return np.ones(len(levels), dtype=np.float32)
        weights = self.settings.positive_weights
        exact = float(weights.get("E", 1.0))
        substitute = float(weights.get("S", exact))  # only read when S is a positive label, then it is set
        return np.where(levels >= LABEL_TO_LEVEL["E"], exact, substitute).astype(np.float32)

    @property
    def hard_negatives(self) -> MinedLists | None:
        """The mined hard-negative lists of the train units (negatives.py), mined on first use; None when off."""
        settings = self.settings.hard_negatives
        label_data = not self.dataset.has_behaviour
        if self._hard_negatives is None and settings.enabled and (label_data or not settings.label_data_only):
            self._hard_negatives = mine_hard_negatives(self.catalog.texts, self.units, self.stages, settings,
                                                       label_data=label_data)
        return self._hard_negatives

    def mining_summary(self) -> dict[str, float | int]:
        """``MinedLists.summary`` of the lists this run mined; empty when it mined none (nothing is mined here)."""
        return self._hard_negatives.summary() if self._hard_negatives is not None else {}

    # -- serving --------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_pairs, shuffle=True, hard_negatives=self.hard_negatives)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.valid_pairs[0]) == 0:
            return []
        return self._loader(self.valid_pairs, shuffle=False)

    def _loader(self, pairs: Examples, shuffle: bool, hard_negatives: MinedLists | None = None) -> DataLoader:
        collate = TrainingBatches(self, pairs, hard_negatives)
        # page-locked batches copy to a GPU asynchronously; on CPU they would only cost. No worker processes:
        # batches are in-memory gathers, and the collate's negative sampler (one RNG) must not be copied per worker
        pinned = torch.cuda.is_available()
        # drop_last stays False: under DDP each rank sees 1/world of the examples, which may be under a batch
        if self.settings.group_by_unit:
            # validation pairs arrive grouped by unit already (stage lists are per unit), so only training shuffles
            sampler = UnitGroupedSampler(pairs[0], self.seed) if shuffle else None
            return DataLoader(range(len(pairs[0])), batch_size=self.batch_size, sampler=sampler,
                              collate_fn=collate, pin_memory=pinned)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(range(len(pairs[0])), batch_size=self.batch_size, shuffle=shuffle,
                          collate_fn=collate, generator=generator, pin_memory=pinned)

    @property
    def batch_size(self) -> int:
        """``batch_size``, shrunk on small data so an epoch has at least ``min_steps_per_epoch`` steps: an Icecat
        fold (~900 pairs) at the configured 1,024 would otherwise train one step per epoch."""
        floor = -(-self.n_train_examples // max(1, self.settings.min_steps_per_epoch))
        return max(1, min(self.settings.batch_size, floor))

    def unit_batches(self, indices: np.ndarray):
        """Query-side inputs of the given units in evaluation-sized batches."""
        size = self.settings.eval_batch_size
        for start in range(0, len(indices), size):
            yield self.units.gather(torch.as_tensor(indices[start : start + size]))

    @property
    def n_train_examples(self) -> int:
        return len(self.train_pairs[0])


class UnitGroupedSampler(Sampler[int]):
    """Example indices with each unit's examples side by side, the units in a fresh random order every epoch."""

    def __init__(self, example_units: np.ndarray, seed: int):
        self.by_unit = np.argsort(example_units, kind="stable")
        sorted_units = example_units[self.by_unit]
        self.starts = np.flatnonzero(np.r_[True, sorted_units[1:] != sorted_units[:-1]])
        self.sizes = np.diff(np.r_[self.starts, len(sorted_units)])
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.by_unit)

    def __iter__(self):
        order = self.rng.permutation(len(self.starts))
        sizes = self.sizes[order]
        # position p of the new order belongs to group g = order[j]: sorted index starts[g] + (p - first p of j)
        shift = np.repeat(self.starts[order] - (np.cumsum(sizes) - sizes), sizes)
        return iter(self.by_unit[shift + np.arange(len(self.by_unit))].tolist())


class TrainingBatches:
    """Collate function: example indices -> a training batch (see the module docstring)."""

    def __init__(self, module: RetrievalDataModule, examples: Examples, hard_negatives: MinedLists | None = None):
        self.module = module
        self.units = torch.as_tensor(examples.units)
        self.items = torch.as_tensor(examples.items)
        self.weights = torch.as_tensor(examples.weights, dtype=torch.float32)
        self.hard_negatives = hard_negatives
        self.rng = np.random.default_rng(module.seed)

    def __call__(self, example_indices: list[int]) -> dict[str, torch.Tensor]:
        examples = torch.as_tensor(example_indices)
        units = self.units[examples]
        batch = self.module.units.gather(units)
        batch["pos_item"] = self.items[examples]
        batch["pos_weight"] = self.weights[examples]
        settings = self.module.settings
        # a unit's other positives in the batch are positives, not negatives: the losses mask them by unit
        batch["pair_unit"] = units
        if settings.group_by_unit:
            distinct, batch["query_row"] = torch.unique(units, return_inverse=True)
            batch["query_batch"] = self.module.units.gather(distinct)
        n_items = len(self.module.catalog)
        if settings.n_random_negatives:
            batch["random_items"] = torch.as_tensor(self.rng.integers(0, n_items, settings.n_random_negatives))
        if "stages" in self.module.fields:
            batch["stage_items"], batch["stage_levels"] = self._stage_lists(units.numpy(), n_items)
        if self.hard_negatives is not None:
            batch["hard_items"] = self._hard_items(units.numpy(), settings.hard_negatives.per_example)
        return batch

    def _hard_items(self, units: np.ndarray, per_example: int) -> torch.Tensor:
        """Per example, ``per_example`` distinct items drawn from its unit's mined list; -1 where it is shorter."""
        hard = np.full((len(units), per_example), -1, dtype=np.int64)
        for row, unit in enumerate(units):
            mined = self.hard_negatives.of(int(unit))
            if len(mined) <= per_example:
                hard[row, : len(mined)] = self.rng.permutation(mined)
            else:
                hard[row] = mined[self.rng.choice(len(mined), per_example, replace=False)]
        return torch.as_tensor(hard)

    def _stage_lists(self, units: np.ndarray, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit: its engaged items first, then sampled unclicked ones, then random items (level 0)."""
        size = self.module.settings.stage_list_size
        n_random = min(self.module.settings.stage_random_items, size)
        items = np.full((len(units), size), -1, dtype=np.int64)
        levels = np.full((len(units), size), -1, dtype=np.int64)
        for row, unit in enumerate(units):
            unit_items, unit_levels = self.module.stages.of(int(unit))
            engaged = np.flatnonzero(unit_levels >= 2)
            unclicked = np.flatnonzero(unit_levels < 2)
            room = size - n_random
            chosen = engaged[:room]
            extra = room - len(chosen)
            if extra > 0 and len(unclicked):
                chosen = np.concatenate([chosen, self.rng.permutation(unclicked)[:extra]])
            k = len(chosen)
            items[row, :k] = unit_items[chosen]
            levels[row, :k] = unit_levels[chosen]
            items[row, k : k + n_random] = self.rng.integers(0, n_items, n_random)
            levels[row, k : k + n_random] = 0
        return torch.as_tensor(items), torch.as_tensor(levels)
