"""The Lightning data module every model trains from.

It builds the item catalogue and the query units once (only the fields the model asks for), mines the
multi-stage lists (stages.py), and serves batches of training examples, one example per (unit, positive item):

- behaviour data (searches + interactions): positives are the train searches' clicked or ordered items;
- label-only data: positives are the train queries' items with the configured labels (E by default).

A batch is a dict: the unit's query-side tensors (features.py), ``pos_item`` int64 [B] (catalogue indices),
``random_items`` int64 [n_random_negatives] (shared sampled negatives, when asked for), and with the
``stages`` field ``stage_items`` / ``stage_levels`` int64 [B, stage_list_size] (-1 = padding; levels as in
stages.py, random items at level 0). Item features are gathered by the model from the catalogue
(``RetrievalModule.item_inputs``), so each batch carries item indices only.

With ``group_by_unit`` (for models whose query tower is the cost, e.g. MGDSPR's behaviour encoders) an epoch
visits the units in a fresh random order with each unit's examples side by side, and a batch also carries
``query_batch`` (the query-side tensors of its distinct units, each once), ``query_row`` int64 [B] (each example's
row in it) and ``pair_unit`` int64 [B] (each example's unit index): the model encodes every search once, and the
losses mask the same search's other positives, which are positives rather than negatives. Under a distributed
sampler (DDP) Lightning re-shards the examples, which splits some groups: still correct, only less is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from retrieval_zoo.data.stages import LABEL_TO_LEVEL, StageLists, mine_from_labels, mine_from_logs


@dataclass
class DataSettings:
    """The ``data`` section of a model config (every key documented in the model YAMLs)."""

    batch_size: int = 256
    eval_batch_size: int = 1024
    n_random_negatives: int = 0
    stage_list_size: int = 12
    stage_random_items: int = 4
    positive_labels: list[str] = field(default_factory=lambda: ["E"])
    max_train_examples: int | None = None
    group_by_unit: bool = False
    features: FeatureSettings = field(default_factory=FeatureSettings)


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
        labels = set(self.settings.positive_labels)
        if labels not in ({"E"}, {"E", "S"}):
            raise DatasetError(f"data.positive_labels must be [E] or [E, S], got {sorted(labels)}")
        return min(LABEL_TO_LEVEL[label] for label in labels)

    def _pairs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        units, items = self.stages.pairs_at_least(self._positive_level())
        keep = self.units.splits[units] == split
        units, items = units[keep], items[keep]
        limit = self.settings.max_train_examples
        if split == "train" and limit is not None and len(units) > limit:
            chosen = np.sort(np.random.default_rng(self.seed).choice(len(units), limit, replace=False))
            units, items = units[chosen], items[chosen]
        return units, items

    # -- serving --------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_pairs, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.valid_pairs[0]) == 0:
            return []
        return self._loader(self.valid_pairs, shuffle=False)

    def _loader(self, pairs: tuple[np.ndarray, np.ndarray], shuffle: bool) -> DataLoader:
        collate = TrainingBatches(self, *pairs)
        # drop_last stays False: under DDP each rank sees 1/world of the examples, which may be under a batch
        if self.settings.group_by_unit:
            # validation pairs arrive grouped by unit already (stage lists are per unit), so only training shuffles
            sampler = UnitGroupedSampler(pairs[0], self.seed) if shuffle else None
            return DataLoader(range(len(pairs[0])), batch_size=self.settings.batch_size, sampler=sampler,
                              collate_fn=collate)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(range(len(pairs[0])), batch_size=self.settings.batch_size, shuffle=shuffle,
                          collate_fn=collate, generator=generator)

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

    def __init__(self, module: RetrievalDataModule, units: np.ndarray, items: np.ndarray):
        self.module = module
        self.units = torch.as_tensor(units)
        self.items = torch.as_tensor(items)
        self.rng = np.random.default_rng(module.seed)

    def __call__(self, example_indices: list[int]) -> dict[str, torch.Tensor]:
        examples = torch.as_tensor(example_indices)
        units = self.units[examples]
        batch = self.module.units.gather(units)
        batch["pos_item"] = self.items[examples]
        settings = self.module.settings
        if settings.group_by_unit:
            distinct, batch["query_row"] = torch.unique(units, return_inverse=True)
            batch["query_batch"] = self.module.units.gather(distinct)
            batch["pair_unit"] = units
        n_items = len(self.module.catalog)
        if settings.n_random_negatives:
            batch["random_items"] = torch.as_tensor(self.rng.integers(0, n_items, settings.n_random_negatives))
        if "stages" in self.module.fields:
            batch["stage_items"], batch["stage_levels"] = self._stage_lists(units.numpy(), n_items)
        return batch

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
