"""A quiet terminal: the known-harmless warnings and notices of the libraries filtered in one place, and progress
bars only where a person watches (a terminal); a log file gets plain periodic lines instead of carriage returns.

``quiet()`` is called where the runner builds its loggers and its Trainer. Every filter names the message and the
module it is raised from, so the same text from anywhere else, and every other warning, still shows; each says
below why it is harmless. A filter is re-added on every call (``warnings`` keeps one copy), so it survives code
that restores the warning filters (pytest does after each test).
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from typing import Any

import psutil
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE
from pytorch_lightning.utilities.warnings import PossibleUserWarning

# (message regex, category, module regex, why it is harmless)
HARMLESS_WARNINGS: list[tuple[str, type[Warning], str, str]] = [
    # torch 2.10+ deprecates instantiating LeafSpec; Lightning 2.6's own pytree copy still builds one for every
    # batch it moves to a device. Nothing of ours uses it; it goes away with the Lightning release that follows
    # torch (the replacement `TreeSpec.is_leaf()` behaves the same).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"pytorch_lightning\.utilities\._pytree",
     "Lightning internals, fixed upstream"),
    # torch's Adagrad builds its sparse step with torch.sparse_coo_tensor from the indices and values of a gradient
    # it has just coalesced itself: valid by construction, so the invariant checks torch asks to opt in/out of
    # would only cost time (the warning is about tensors built from untrusted indices).
    (r"Sparse invariant checks are implicitly disabled", UserWarning, r"torch\.optim\.adagrad",
     "Adagrad's own sparse step, valid by construction"),
    # the runner keeps one CSV training log per dataset/model/variant/seed (results/runs/logs/...), replaced when
    # the seed is run again, as its run folder is; Lightning's CSV logger says so at every rerun
    (r"Experiment logs directory .* exists and is not empty", UserWarning, r"lightning_fabric\.loggers\.csv_logs",
     "a rerun replaces its seed's CSV log by design"),
]

# Lightning's rank_zero_info lines (logging, not warnings): "GPU available: ... used: ...", "TPU available ...",
# "💡 Tip: ... litlogger / litmodels", "`Trainer.fit` stopped: `max_epochs=N` reached.", "LOCAL_RANK: 0 -
# CUDA_VISIBLE_DEVICES", the Tensor Cores hint. The run folder records the device (meta.json) and the epochs
# (valid_curve.csv, costs); Lightning's warnings go through `warnings` and still show.
LIGHTNING_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                          "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")

PLAIN_INTERVAL_S = 60.0  # a log file gets a progress line at least this often within a long epoch


def memory_text() -> str:
    """This process's resident memory now and its peak so far, for log lines: a log that ends in a kill (a
    timeout, the OOM killer) still says which stage the memory grew in."""
    now = psutil.Process().memory_info().rss / 2**30
    try:
        import resource
    except ImportError:  # Windows: no peak figure
        return f"rss {now:.2f} GiB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 2**30
    # the kernel updates the high-water mark lazily: it can read a little below the resident size just measured
    return f"rss {now:.2f} GiB (peak {max(peak, now):.2f})"


def quiet() -> None:
    """Filter the known-harmless warnings (``HARMLESS_WARNINGS``) and Lightning's info lines."""
    for message, category, module, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# Lightning warns when any module is in eval mode as training starts ("... If this is intentional, you can ignore
# this warning."). A model may keep a frozen reference copy in eval mode on purpose (the untouched MiniLM of
# ``minilm.QuerySentenceTuning``, which must equal the tuned copy before any step, so never dropout): such a
# module says so with ``kept_in_eval = True``. The warning is filtered only for exactly the count of modules
# under those, so one more module left in eval mode by mistake changes the count and the warning still shows.
EVAL_MODE_WARNING = r"Found {count} module\(s\) in eval mode at the start of training\."


def kept_in_eval_count(module: torch.nn.Module) -> int:
    """How many modules in eval mode now (as Lightning counts them: each once) sit under a module marked
    ``kept_in_eval``. Counted as fit starts: Lightning keeps the modes a model has then, and warns on those."""
    return len({id(inner) for outer in module.modules() if getattr(outer, "kept_in_eval", False)
                for inner in outer.modules() if not inner.training})


class Quiet(L.Callback):
    """``quiet()`` in every process the Trainer trains in (a spawned DDP worker starts with Python's filters),
    and Lightning's eval-mode warning filtered for the modules the model keeps in eval mode by design."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        quiet()
        count = kept_in_eval_count(pl_module)
        if count:
            warnings.filterwarnings("ignore", message=EVAL_MODE_WARNING.format(count=count),
                                    category=PossibleUserWarning)


def on_terminal() -> bool:
    """Whether progress bars have someone to watch them: stderr (where the bars are drawn) is a terminal."""
    return sys.stderr.isatty()


def show_bars(progress: bool) -> bool:
    """``progress`` as asked, on a terminal only (a redirected bar is a stream of carriage returns in a log)."""
    return progress and on_terminal()


def progress_callbacks(progress: bool) -> list[L.Callback]:
    """The Trainer's progress display: a bar on a terminal, plain periodic lines otherwise, none without
    ``progress``. Pass ``enable_progress_bar=bool(result)`` to the Trainer."""
    if not progress:
        return []
    if on_terminal():
        return [EpochBar() if _RICH_AVAILABLE else EpochTQDMBar()]
    return [PlainProgress()]


def _epoch_text(trainer: L.Trainer) -> str:
    """The epoch being trained, counted from 1 as a person counts: ``Epoch 2/2`` is the last of two.
    (Lightning's bars count from 0, so a 2-epoch run ends on ``Epoch 1/1``.)"""
    text = f"Epoch {trainer.current_epoch + 1}"
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        text += f"/{trainer.max_epochs}"
    return text


def _without_version(items: dict[str, Any]) -> dict[str, Any]:
    items.pop("v_num", None)  # the logger's version (a W&B run id's tail): no information for the reader
    return items


class EpochBar(RichProgressBar):
    """Lightning's rich bar on stderr (beside tqdm's bars, off stdout's tables), epochs counted from 1."""

    def __init__(self) -> None:
        super().__init__(console_kwargs={"stderr": True})

    def _get_train_description(self, current_epoch: int) -> str:
        text = _epoch_text(self.trainer)
        if len(self.validation_description) > len(text):
            text = f"{text:{len(self.validation_description)}}"  # as Lightning pads it, against flicker
        return text

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


class EpochTQDMBar(TQDMProgressBar):
    """Lightning's tqdm bar (when rich is not installed), epochs counted from 1."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        self.train_progress_bar.set_description(_epoch_text(trainer))

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        return _without_version(super().get_metrics(trainer, pl_module))


class PlainProgress(ProgressBar):
    """Progress for a log file: one line per training epoch (steps, seconds, memory, the last logged train losses
    and the epoch's valid metrics), and a line at least every ``interval`` seconds within a long epoch. Rank 0 only."""

    def __init__(self, interval: float = PLAIN_INTERVAL_S) -> None:
        super().__init__()
        self.interval = interval
        self._enabled = True
        self._epoch_started = self._last_line = 0.0
        self._done = 0  # batches of the epoch so far

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self._epoch_started = self._last_line = time.monotonic()
        self._done = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._done = batch_idx + 1
        now = time.monotonic()
        if self.is_enabled and now - self._last_line >= self.interval:
            self._print(trainer, pl_module, self._done, now, epoch_end=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.is_enabled:
            self._print(trainer, pl_module, self._done, time.monotonic(), epoch_end=True)

    def _print(self, trainer: L.Trainer, pl_module, done: int, now: float, epoch_end: bool) -> None:
        total = self.total_train_batches
        steps = f"{done}/{total}" if isinstance(total, int) or (isinstance(total, float) and math.isfinite(total)) \
            else str(done)
        metrics = self.get_metrics(trainer, pl_module)
        if epoch_end:  # the valid metrics the validation callback logged for this epoch
            metrics |= {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        shown = "  ".join(f"{k} {_number(v)}" for k, v in metrics.items() if k != "v_num")
        line = f"{_epoch_text(trainer).lower()}  {steps} steps  {now - self._epoch_started:.1f}s  {memory_text()}"
        print(f"{line}  {shown}".rstrip(), file=sys.stderr, flush=True)
        self._last_line = now


def _number(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
