"""The one interface every model sits behind: a query tower, an item tower, a loss, inner-product scoring.

A model file defines a ``TwoTowerModel`` subclass (its towers are plain ``nn.Module``s) that declares the input
fields it needs (see ``retrieval_zoo.data.features``). ``RetrievalModule`` wraps any such model with a loss and
an optimiser into a LightningModule; the Trainer, callbacks, loggers and strategies do the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from retrieval_zoo.data.datamodule import RetrievalDataModule
from retrieval_zoo.data.features import ItemCatalog, columns_in_text
from retrieval_zoo.distributed import gather_rows, shard
from retrieval_zoo.heap import release_freed_memory
from retrieval_zoo.models.components import pretrained_parameter_ids

SCHEDULES = ("constant", "linear", "cosine")


class TwoTowerModel(nn.Module):
    """Base class of a model: ``encode_queries(batch)`` and ``encode_items(inputs)`` return [B, dim] vectors.

    Subclasses set ``required_fields`` (the run fails clearly if a dataset lacks one) and ``optional_fields``
    (used when the dataset has them, e.g. user histories), and may override ``prepare`` to derive cached inputs
    (such as frozen image features) once the data module is built.
    """

    required_fields: ClassVar[set[str]] = {"query_text", "item_text"}
    optional_fields: ClassVar[set[str]] = set()
    query_tower: nn.Module
    item_tower: nn.Module

    def encode_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.query_tower(batch)

    def encode_items(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.item_tower(inputs)

    @classmethod
    def text_columns(cls, section: Any, item_text: Mapping[str, int]) -> set[str]:
        """The product columns a run of this model reads as text, given its typed ``model:`` section and the
        item-text budgets: every two-tower model reads the composed item text (features.py)."""
        return columns_in_text(item_text)

    def prepare(self, datamodule: RetrievalDataModule) -> None:
        """Hook run once after the data module is set up and before training."""

    def catalogue_order(self, catalog) -> np.ndarray | None:
        """The order to encode the catalogue in (None: catalogue order). Items are encoded independently, so
        only speed depends on it: a transformer tower pads each batch to its longest text, and grouping texts of
        similar length (as sentence-transformers' ``encode`` does) spares the padding."""
        return None

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())


class RetrievalModule(pl.LightningModule):
    """A two-tower model + a loss + an optimiser, trained by Lightning and scored by inner product."""

    def __init__(self, model: TwoTowerModel, loss: nn.Module, optimizer: dict[str, Any] | None = None,
                 name: str = "model", scheduler: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.loss = loss
        self.optimizer_config = dict(optimizer or {"name": "adam", "lr": 1e-3})
        self.scheduler_config = dict(scheduler or {"name": "constant", "warmup": 0.0})
        if self.scheduler_config.get("name") not in SCHEDULES:
            raise ValueError(f"scheduler.name must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.scheduler_config.get('name')!r}")
        self.name = name
        self.catalog: ItemCatalog | None = None
        self.train_seconds = 0.0
        self.train_examples = 0

    @property
    def required_fields(self) -> set[str]:
        return set(self.model.required_fields)

    @property
    def optional_fields(self) -> set[str]:
        return set(self.model.optional_fields)

    # -- inputs ---------------------------------------------------------------------------------------
    def attach(self, datamodule: RetrievalDataModule) -> None:
        """Give the module the catalogue it gathers item inputs from, and let the model prepare."""
        datamodule.setup()
        self.catalog = datamodule.catalog
        self.model.prepare(datamodule)

    def item_inputs(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = self.catalog.gather(indices.cpu())
        return {name: tensor.to(self.device, non_blocking=True) for name, tensor in inputs.items()}

    # -- encoders -------------------------------------------------------------------------------------
    def encode_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.encode_queries(self.tuned_query_side(batch))

    def encode_query_heads(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each query head's own vector [B, H, d] (MMSE), from the same query side as ``encode_queries``."""
        return self.model.query_head_vectors(self.tuned_query_side(batch))

    def tuned_query_side(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with its sentence vectors from the fine-tuned query encoder, where a pretrained start has one
        (models/minilm.py ``QuerySentenceTuning``); else the batch as it is."""
        tuning = getattr(self.model, "query_sentence_tuning", None)
        return batch if tuning is None else {**batch, "query_sentence": tuning(batch)}

    def encode_items(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.encode_items(inputs)

    def encode_item_indices(self, indices: torch.Tensor) -> torch.Tensor:
        flat = indices.reshape(-1)
        safe = flat.clamp(min=0)  # -1 padding encodes item 0; callers mask those positions
        return self.encode_items(self.item_inputs(safe)).reshape(*indices.shape, -1)

    @torch.no_grad()
    def encode_catalog(self, batch_size: int = 2048, progress: bool = True) -> np.ndarray:
        """All catalogue vectors, float32 [n_items, dim], in bounded-memory batches.

        Under DDP (a process group is up, e.g. every rank of a torchrun launch) each rank encodes only its share
        of the catalogue and the shares are all-gathered, so every rank ends with the whole matrix.
        """
        from tqdm.auto import tqdm

        release_freed_memory()  # training's freed activations, else still held while the catalogue is encoded
        self.eval()
        n_items = len(self.catalog)
        order = self.model.catalogue_order(self.catalog)
        rows = torch.arange(n_items) if order is None else torch.as_tensor(order, dtype=torch.int64)
        share = shard(n_items)
        mine = rows[share.start : share.stop]
        batches = tqdm(range(0, len(mine), batch_size), desc=f"encode catalogue ({self.name})",
                       disable=not progress, leave=False)
        if len(mine) == n_items:  # one process: each batch goes straight to its rows of one host array
            return self._encode_into_one_array(mine, batches, batch_size)
        chunks = [self._encode_item_rows(mine[start : start + batch_size]) for start in batches]
        local = torch.cat(chunks) if chunks else self._encode_item_rows(rows[:1])[:0]  # an empty share keeps dim
        vectors = gather_rows(local, n_items)
        if order is not None:  # back to catalogue order
            vectors = torch.empty_like(vectors).index_copy_(0, rows.to(vectors.device), vectors)
        return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)

    def _encode_into_one_array(self, rows: torch.Tensor, batches, batch_size: int) -> np.ndarray:
        """``encode_catalog`` in one process, the catalogue held once: a list of batches joined, then put back in
        catalogue order, held it two or three times (0.6-1.2 GB more at ESCI's 1.2M items and 128-d, 1.8-3.7 GB
        at MiniLM's 384), in every validation check and in the final encoding."""
        vectors = None
        for start in batches:
            part = rows[start : start + batch_size]
            encoded = self._encode_item_rows(part).cpu().numpy()
            if vectors is None:
                vectors = np.empty((len(rows), encoded.shape[1]), dtype=np.float32)
            vectors[part.numpy()] = encoded
        return vectors if vectors is not None else self._encode_item_rows(rows[:1])[:0].cpu().numpy()

    def _encode_item_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.encode_items(self.item_inputs(rows)).float()

    @torch.no_grad()
    def encode_units(self, datamodule: RetrievalDataModule, indices: np.ndarray) -> np.ndarray:
        self.eval()
        chunks = []
        for batch in datamodule.unit_batches(indices):
            batch = {k: v.to(self.device) for k, v in batch.items()}
            chunks.append(self.encode_queries(batch).float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    # -- training -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        size = len(batch["pos_item"])
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=True, batch_size=size)
        self.train_examples += size
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        losses = self._losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=len(batch["pos_item"]))

    @staticmethod
    def query_rows(encode, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``encode`` (a query-side encoder) applied to the batch, one output row per training example."""
        if "query_batch" in batch:  # data.group_by_unit: each search encoded once, one row per positive
            return encode(batch["query_batch"])[batch["query_row"]]
        return encode(batch)

    def _losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encode the queries, the positives and whatever else the loss asks for (sampled, hard or stage items,
        query heads: its ``extra_vectors``), then hand the loss tensors only."""
        queries = self.query_rows(self.encode_queries, batch)
        positives = self.encode_item_indices(batch["pos_item"])
        heads = ((lambda: self.query_rows(self.encode_query_heads, batch))
                 if hasattr(self.model, "query_head_vectors") else None)
        extra = self.loss.extra_vectors(batch, self.encode_item_indices, heads)
        losses = self.loss(queries, positives, batch, extra)
        return losses if isinstance(losses, dict) else {"loss": losses}

    def on_train_epoch_start(self) -> None:
        self._epoch_started = self._last_batch_end = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        # up to the last batch: the retrieval validation that follows an epoch is not training time
        self.train_seconds += self._last_batch_end - self._epoch_started

    def configure_optimizers(self):
        config = {key: value for key, value in self.optimizer_config.items() if value is not None}  # null: unset
        name = config.pop("name")
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad,
                      "sgd": torch.optim.SGD}
        if name not in optimizers:
            raise ValueError(f"unknown optimizer '{name}'; valid optimizers: {', '.join(optimizers)}")
        dense = config.pop("dense", None) or {}
        pretrained_lr = config.pop("pretrained_lr", None)
        optimizer = optimizers[name](self.parameter_groups(dense, pretrained_lr), **config)
        if name == "adagrad":
            # torch's Adagrad starts every group's accumulator at the constructor's value, ignoring the group's
            for group in optimizer.param_groups:
                if "initial_accumulator_value" in group:
                    for parameter in group["params"]:
                        optimizer.state[parameter]["sum"].fill_(group["initial_accumulator_value"])
        schedule = self.lr_schedule()
        if schedule is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_schedule(self):
        """The ``scheduler`` config as a step -> factor function: linear warmup over the first ``warmup`` share
        of the planned steps, then constant, linear or cosine decay to 0 at the last planned step (the
        sentence-transformers / Hugging Face schedules). None when the learning rate is simply constant."""
        name, warmup = self.scheduler_config["name"], float(self.scheduler_config.get("warmup", 0.0))
        if name == "constant" and warmup == 0:
            return None
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = int(round(warmup * total))

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
            if name == "linear":
                return 1.0 - progress
            if name == "cosine":
                return 0.5 * (1.0 + float(np.cos(np.pi * progress)))
            return 1.0

        return factor

    def parameter_groups(self, dense: dict[str, Any], pretrained_lr: float | None = None) -> list[dict[str, Any]]:
        """The trainable parameters as optimiser groups: embedding tables with the optimiser's own settings,
        (when ``dense`` names any) every other parameter with those settings on top, and (given
        ``pretrained_lr``) the parameters that carry a pretrained start (``components.mark_pretrained``) at
        that learning rate.

        Why: AdaGrad's per-weight step starts at about lr * g / sqrt(accumulator + g^2). A sparse embedding row
        sees few, small gradients and needs a small accumulator start to learn at all, while a dense layer that
        every example touches is thrown off by a first step of ~lr per weight (MGDSPR: optimizer.dense).
        """
        trainable = [p for p in self.parameters() if p.requires_grad]
        pretrained = pretrained_parameter_ids(self) if pretrained_lr is not None else set()
        own = [p for p in trainable if id(p) not in pretrained]
        groups = [{"params": [p for p in trainable if id(p) in pretrained], "group": "pretrained",
                   **({**dense, "lr": pretrained_lr} if pretrained_lr is not None else {})}]
        if dense:
            tables = {id(m.weight) for m in self.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
            groups += [{"params": [p for p in own if id(p) in tables], "group": "tables"},
                       {"params": [p for p in own if id(p) not in tables], "group": "dense", **dense}]
        else:
            groups.append({"params": own, "group": "all"})
        return [group for group in groups if group["params"]]

    def count_parameters(self) -> tuple[int, int]:
        """(all, trainable) parameter counts."""
        params = list(self.model.parameters()) + list(self.loss.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
