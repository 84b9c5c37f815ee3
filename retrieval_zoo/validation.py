"""Model selection by the retrieval metric: the runner's own evaluation on valid queries, before and during training.

DPR, ANCE and Tevatron users select checkpoints by retrieval quality on held-out queries, not by the training
loss: on small real data (Icecat folds of ~100 queries) the loss keeps falling while NDCG@10 falls below the
pretrained start. ``RetrievalValidation`` (a Lightning callback) encodes the whole catalogue, searches the valid
units' top K with faiss and scores them with ranx, exactly as the test evaluation does, and logs
``val/ndcg@10``, ``val/recall@100`` (and whatever ``validation.metrics`` names):

- once before the first step (the *start*, "epoch 0"), kept as ``start.ckpt``;
- after every ``validation.every_n_epochs`` epochs, where Lightning's ``ModelCheckpoint`` keeps the best state
  and ``EarlyStopping`` stops after ``validation.patience`` checks without improvement.

``select_best`` then loads whichever state scored best on valid, the start included (ties keep the earlier
state), so a variant that starts from a pretrained model ends at or above its start on valid by construction.
The test split is never seen by selection.

``validation.wise_ft_alpha`` below 1 scores, keeps and serves each trained check as the weight-space ensemble of
WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): start + alpha (trained - start),
every floating-point weight interpolated between the start and the trained state. Training itself goes on from
the trained weights; only what a check scores (and what selection keeps) is the ensemble, so the start stays a
candidate and the guarantee above holds for the ensembles too. At 1.0 (the default) a check scores the trained
weights as they are.

``validation.average_top_k`` above 1 replaces the best check by an average: the uniform weight average of the
``average_top_k`` trained checks that scored best on valid (ModelCheckpoint's top k; all of them when fewer were
made), the checkpoint averaging of Vaswani et al. ("Attention is all you need", 2017) and the uniform soup of
Wortsman et al. ("Model soups", ICML 2022), whose fine-tuned states from one start average within one basin. The
average is scored on valid after training and kept if it beats the start, so the guarantee above holds for it
too. It is not also compared with the best check: that check's valid score is the maximum of several noisy ones,
and picking the higher of the two would only add that noise back. Weights the checks share (frozen layers,
buffers) are kept bit for bit; at 1 (the default) no average is made.

Costs: one catalogue encoding + a faiss search of at most ``validation.max_queries`` units per check (the whole
catalogue is always searched: a shrunken catalogue would flatter every model). The test search reuses the catalogue
vectors of the selected check (``catalogue_of``) instead of encoding the same state a second time: on a 1.2M-item
catalogue that is a whole encoding pass (~6.5 min for MRSE on one core). Vectors are kept on disk, beside the
checkpoints, only for the checks ``select_best`` can still pick.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from retrieval_zoo.evaluation import build_targets, check_metrics, evaluate_run, run_from_topk
from retrieval_zoo.index import chosen_factory, index_and_search


@dataclass
class ValidationSettings:
    """The ``validation`` section of a config (every key documented in ``configs/defaults.yaml``)."""

    enabled: bool = True
    monitor: str = "ndcg@10"
    metrics: list[str] = field(default_factory=lambda: ["ndcg@10", "recall@100"])
    every_n_epochs: int = 1
    patience: int = 2
    min_delta: float = 0.0
    max_queries: int | None = 2000
    k: int = 100
    valid_fraction: float = 0.1
    wise_ft_alpha: float = 1.0
    average_top_k: int = 1

    def __post_init__(self) -> None:
        check_metrics(self.metrics)
        if self.monitor not in self.metrics:
            raise ValueError(f"validation.monitor '{self.monitor}' must be one of validation.metrics {self.metrics}")
        if self.every_n_epochs < 1 or self.patience < 0:
            raise ValueError("validation.every_n_epochs must be >= 1 and validation.patience >= 0")
        if not 0.0 < self.wise_ft_alpha <= 1.0:
            raise ValueError(f"validation.wise_ft_alpha must be in (0, 1] (1: the trained weights as they are), "
                             f"got {self.wise_ft_alpha}")
        if self.average_top_k < 1:
            raise ValueError(f"validation.average_top_k must be >= 1 (1: no average), got {self.average_top_k}")
        if self.average_top_k > 1 and self.wise_ft_alpha < 1.0:
            raise ValueError("validation.average_top_k > 1 and validation.wise_ft_alpha < 1 both change what "
                             "selection keeps; set one of them")

    @property
    def monitor_key(self) -> str:
        return f"val/{self.monitor}"


def valid_sample(unit_ids: list[str], indices: np.ndarray, limit: int | None) -> np.ndarray:
    """At most ``limit`` of the valid units, chosen by a hash of their id: the same sample for every model,
    seed and process."""
    if limit is None or len(indices) <= limit:
        return indices
    keys = np.array([hashlib.sha256(unit_ids[i].encode()).hexdigest() for i in indices])
    return np.sort(indices[np.argsort(keys, kind="stable")[:limit]])


def weight_space_ensemble(start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor],
                          alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT's weights: start + alpha (trained - start) for every floating-point tensor; the others (counters,
    token ids) as trained."""
    return {name: torch.lerp(start[name].to(tensor.device), tensor, alpha) if tensor.is_floating_point() else tensor
            for name, tensor in trained.items()}


def uniform_average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The weight-by-weight mean of ``states``; tensors equal in every state (frozen weights, buffers, counters)
    are the first state's, bit for bit (a mean of equal float32 values may round)."""
    first = states[0]
    averaged = {}
    for name, tensor in first.items():
        others = [state[name].to(tensor.device) for state in states[1:]]
        if not tensor.is_floating_point() or all(torch.equal(tensor, other) for other in others):
            averaged[name] = tensor
        else:
            averaged[name] = torch.stack([tensor, *others]).mean(0)
    return averaged


AVERAGE = "average"  # the catalogue key of the averaged candidate (checks are keyed by their epoch)


class ValidScorer:
    """The valid units' targets, and the metrics of a top-K ranking of them (ranx, as the test evaluation)."""

    def __init__(self, datamodule, units: np.ndarray, metrics: list[str]):
        table = datamodule.units
        self.unit_frame = pl.DataFrame({
            "unit_id": [table.unit_ids[i] for i in units], "query_id": [table.query_ids[i] for i in units],
            "group": [table.groups[i] for i in units]}, schema_overrides={"group": pl.Utf8})
        dataset = datamodule.dataset
        self.targets = build_targets(dataset.judgments, self.unit_frame,
                                     dataset.interactions if dataset.has_behaviour else None)
        self.product_ids = datamodule.catalog.product_ids
        self.metrics = metrics

    def score(self, scores: np.ndarray, indices: np.ndarray) -> dict[str, float]:
        """Metric means of the ranking ``indices`` (catalogue rows, [n_units, k]) with their ``scores``."""
        return self.score_per_query(scores, indices)[0]

    def score_per_query(self, scores: np.ndarray, indices: np.ndarray) -> tuple[dict[str, float], pl.DataFrame]:
        """``score``'s means and each valid unit's values (unit_id, metric, value), whose mean they are."""
        run = run_from_topk(self.unit_frame["unit_id"].to_list(), self.product_ids, scores, indices)
        means, per_query = evaluate_run(self.targets, run, self.metrics)
        return {name: float(means.get(name, float("nan"))) for name in self.metrics}, per_query


class RetrievalValidation(L.Callback):
    """Scores the model on the valid units with the test-time pipeline (catalogue encoding, faiss, ranx)."""

    def __init__(self, datamodule, units: np.ndarray, settings: ValidationSettings, index: dict[str, Any],
                 seed: int, checkpoint_dir: Path):
        self.datamodule = datamodule
        self.units = units
        self.settings = settings
        self.index = index
        self.seed = seed
        self.checkpoint_dir = Path(checkpoint_dir)
        self.curve: list[dict[str, float]] = []
        self.seconds = 0.0
        self.keep_catalogue = False  # set at the start of fit: one process only (DDP ranks encode collectively)
        self.encode_seconds: dict[int, float] = {}
        self.scorer = ValidScorer(datamodule, units, settings.metrics)

    @property
    def start_path(self) -> Path:
        return self.checkpoint_dir / "start.ckpt"

    def evaluate(self, module, epoch: int | str | None = None) -> dict[str, float]:
        """The valid scores of ``module`` as it is now (a trained check's WiSE-FT ensemble when
        ``wise_ft_alpha`` < 1); ``epoch`` (the check's, or ``AVERAGE``) keeps its catalogue vectors for the test
        search when this process may reuse them."""
        if isinstance(epoch, int) and epoch > 0 and self.settings.wise_ft_alpha < 1.0:
            trained = {name: tensor.clone() for name, tensor in module.state_dict().items()}
            module.load_state_dict(self.ensemble_of(trained))
            try:
                return self._evaluate(module, epoch)
            finally:
                module.load_state_dict(trained)  # training goes on from the trained weights, bit for bit
        return self._evaluate(module, epoch)

    def ensemble_of(self, trained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The state a trained check scores and selection keeps: ``trained`` itself at ``wise_ft_alpha`` 1, else
        its weight-space ensemble with the start (read back from ``start.ckpt``, as ``select_best`` reads it)."""
        if self.settings.wise_ft_alpha >= 1.0:
            return trained
        start = torch.load(self.start_path, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
        return weight_space_ensemble(start, trained, self.settings.wise_ft_alpha)

    def _evaluate(self, module, epoch: int | str | None) -> dict[str, float]:
        started = time.perf_counter()
        was_training = module.training
        items = module.encode_catalog(batch_size=self.datamodule.settings.eval_batch_size, progress=False)
        if epoch is not None:
            self.encode_seconds[epoch] = time.perf_counter() - started
            if self.keep_catalogue:
                np.save(self._catalogue_path(epoch), items)
        queries = module.encode_units(self.datamodule, self.units)
        found = index_and_search(items, queries, min(self.settings.k, len(items)),
                                 chosen_factory(self.index, len(items)), self.index["nprobe"],
                                 self.index["ef_search"], self.seed)
        scores, per_query = self.scorer.score_per_query(found.scores, found.indices)
        if epoch is not None and self.keep_catalogue:
            per_query.with_columns(pl.lit(str(epoch)).alias("check")).write_parquet(self._queries_path(epoch))
        module.train(was_training)
        self.seconds += time.perf_counter() - started
        return scores

    @property
    def curve_path(self) -> Path:
        return self.checkpoint_dir / "valid_curve.json"

    def _record(self, trainer: L.Trainer, epoch: int, scores: dict[str, float]) -> None:
        # on disk as well: under spawn-based strategies the callback that trained is a worker's copy
        self.curve.append({"epoch": epoch, **scores})
        if trainer.is_global_zero:
            self.curve_path.write_text(json.dumps({"curve": self.curve, "seconds": self.seconds}))
        self._drop_unselectable_catalogues()

    def _catalogue_path(self, epoch: int | str) -> Path:
        return self.checkpoint_dir / (f"catalogue-{epoch}.npy" if epoch == AVERAGE else f"catalogue-epoch{epoch}.npy")

    def _queries_path(self, epoch: int | str) -> Path:
        return self.checkpoint_dir / f"valid-queries-{epoch}.parquet"

    def valid_per_query(self) -> pl.DataFrame | None:
        """Every check's (and the average's) value of each valid unit: check ("0" the start, "1".. the epochs,
        "average"), unit_id, metric, value; None under several processes (not kept there). A selection rule can be
        judged on units it did not select on (a split of them) only from these, not from the curve's means."""
        paths = sorted(self.checkpoint_dir.glob("valid-queries-*.parquet"))
        if not self.keep_catalogue or not paths:
            return None
        return pl.concat([pl.read_parquet(path) for path in paths]).select("check", "unit_id", "metric", "value")

    def _drop_unselectable_catalogues(self) -> None:
        """Delete the vectors of trained checks that can no longer be selected, so at most a few stay on disk.

        The start is always a candidate. A trained check stays one while its score is within 1e-6 of the best
        trained score: Lightning's ModelCheckpoint compares the float32 logs, so checks that differ by less than
        float32 rounding may be the one it kept (``select_best`` reads which from the checkpoint).
        """
        trained = [point for point in self.curve if point["epoch"] > 0]
        if not trained:
            return
        best = max(point[self.settings.monitor] for point in trained)
        for point in trained:
            if not point[self.settings.monitor] >= best - 1e-6:  # NaN scores are never kept either
                self._catalogue_path(point["epoch"]).unlink(missing_ok=True)

    def catalogue_of(self, epoch: int | str) -> tuple[np.ndarray, float] | None:
        """The catalogue vectors the check at ``epoch`` (or the average, ``AVERAGE``) encoded and the seconds that
        took, or None (not kept: several processes, or a check that was dropped as unselectable).

        They are the test vectors of that state exactly: the same ``encode_catalog`` in eval mode, on the same
        device, of weights that ``select_best`` restores bit for bit from the check's checkpoint.
        """
        path = self._catalogue_path(epoch)
        if not self.keep_catalogue or not path.exists():
            return None
        return np.load(path), self.encode_seconds[epoch]

    def recorded(self) -> tuple[list[dict[str, float]], float]:
        """The valid curve and the validation seconds, as the process that trained recorded them."""
        saved = json.loads(self.curve_path.read_text())
        return saved["curve"], saved["seconds"]

    def on_train_start(self, trainer: L.Trainer, module) -> None:
        self.keep_catalogue = trainer.world_size == 1
        scores = self.evaluate(module, 0)
        self._record(trainer, 0, scores)
        trainer.save_checkpoint(self.start_path, weights_only=True)
        for logger in trainer.loggers:
            logger.log_metrics({f"val/{name}": value for name, value in scores.items()}, step=0)
        # the start is the score to beat: EarlyStopping counts checks that fail to improve on it
        for callback in trainer.callbacks:
            if isinstance(callback, EarlyStopping):
                callback.best_score = torch.tensor(scores[self.settings.monitor])

    def on_train_epoch_end(self, trainer: L.Trainer, module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.settings.every_n_epochs:
            return
        scores = self.evaluate(module, epoch)
        self._record(trainer, epoch, scores)
        module.log_dict({f"val/{name}": value for name, value in scores.items()}, on_epoch=True)


def selection_callbacks(settings: ValidationSettings, checkpoint_dir: Path) -> list[L.Callback]:
    """Lightning's own callbacks that keep the best state and stop early, watching ``val/<monitor>``."""
    monitor = settings.monitor_key
    # one file per kept check when several are averaged; "best" alone otherwise
    filename = "best" if settings.average_top_k == 1 else "check-{epoch}"
    return [
        ModelCheckpoint(dirpath=checkpoint_dir, filename=filename, monitor=monitor, mode="max",
                        save_top_k=settings.average_top_k,
                        save_weights_only=True, save_on_train_epoch_end=True, every_n_epochs=settings.every_n_epochs),
        EarlyStopping(monitor=monitor, mode="max", patience=settings.patience, min_delta=settings.min_delta,
                      check_on_train_epoch_end=True, strict=False),
    ]


@dataclass
class Selection:
    """Which state the test metrics come from."""

    best_epoch: int
    best_score: float
    epochs_trained: int
    curve: list[dict[str, float]]
    validation_seconds: float
    averaged_epochs: list[int] = field(default_factory=list)  # the checks averaged into the kept state (if it is)

    @property
    def catalogue_key(self) -> int | str:
        """Whose catalogue vectors the test search may reuse (``RetrievalValidation.catalogue_of``)."""
        return AVERAGE if self.averaged_epochs else self.best_epoch


def select_best(trainer: L.Trainer, module, validation: RetrievalValidation) -> Selection:
    """Load the best state on valid into ``module``: the start or the trained candidate (ties keep the start).

    The trained candidate is ModelCheckpoint's best check, as it scored it (the WiSE-FT ensemble when
    ``validation.wise_ft_alpha`` < 1), or, with ``validation.average_top_k`` > 1 and at least two checks kept,
    the uniform average of the kept checks, scored on valid here.
    Scores are compared as the callback computed them (float64), not as Lightning logged them (float32).
    """
    curve, seconds = validation.recorded()
    scores = {point["epoch"]: point[validation.settings.monitor] for point in curve}
    checkpoint = trainer.checkpoint_callback
    if validation.settings.average_top_k > 1:
        curve = [{**point, "averaged": int(point["epoch"] > 0)} for point in curve]
        kept = sorted((_epoch_of(path), path) for path in checkpoint.best_k_models) if checkpoint is not None else []
        if len(kept) >= 2:
            return _average_or_start(kept, module, validation, Selection(0, scores[0], max(scores), curve, seconds))
    best_epoch, best_path = 0, validation.start_path
    if checkpoint is not None and checkpoint.best_model_path:
        trained_epoch = _epoch_of(checkpoint.best_model_path)
        if scores[trained_epoch] > scores[0]:
            best_epoch, best_path = trained_epoch, Path(checkpoint.best_model_path)
    state = torch.load(best_path, map_location=module.device, weights_only=False, mmap=True)["state_dict"]
    if best_epoch > 0:
        state = validation.ensemble_of(state)
    module.load_state_dict(state)  # copies into the parameters: the mapped checkpoint is dropped after
    return Selection(best_epoch, scores[best_epoch], max(scores), curve, seconds)


def _epoch_of(path: str | Path) -> int:
    """Epochs trained when a check's checkpoint was saved (memory-mapped: the weights are not read)."""
    saved = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return int(saved["epoch"]) + 1  # saved at the end of 0-based epoch e: e + 1 epochs trained


def _average_or_start(checks: list[tuple[int, str]], module, validation: RetrievalValidation,
                      start: Selection) -> Selection:
    """Score the uniform average of the ``checks`` (epoch, checkpoint path) on valid and keep it (loaded in
    ``module``) if it beats the start, else load the start. The curve gains the average's row: its epoch is the
    last averaged check's (the state exists from then on), its ``averaged`` the number of checks in it."""
    epochs = [epoch for epoch, _ in checks]
    states = [torch.load(path, map_location=module.device, weights_only=False, mmap=True)["state_dict"]
              for _, path in checks]
    module.load_state_dict(uniform_average(states))
    started = time.perf_counter()
    scores = validation.evaluate(module, AVERAGE)
    seconds = start.validation_seconds + time.perf_counter() - started
    curve = [*start.curve, {"epoch": max(epochs), **scores, "averaged": len(epochs)}]
    score = scores[validation.settings.monitor]
    if score > start.best_score:
        return Selection(max(epochs), score, start.epochs_trained, curve, seconds, epochs)
    module.load_state_dict(torch.load(validation.start_path, map_location=module.device, weights_only=False,
                                      mmap=True)["state_dict"])
    return Selection(0, start.best_score, start.epochs_trained, curve, seconds)
