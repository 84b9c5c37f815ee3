"""A quiet terminal (issue 22, part 7): the known-harmless warnings and Lightning's notices filtered narrowly,
progress bars on a terminal only, plain epoch lines in a log."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import pytorch_lightning
import torch

from retrieval_zoo import quiet
from retrieval_zoo.quiet import EpochBar, PlainProgress, memory_text, progress_callbacks

ROOT = Path(__file__).resolve().parents[1]

# what a bench run printed before (issue 22): each must be gone from a log
KNOWN_NOISE = ["💡 Tip", "litlogger", "GPU available", "TPU available", "isinstance(treespec, LeafSpec)",
               "smaller than the logging interval", "Sparse invariant checks", "anonymous setting",
               "Epoch 1/1", "`Trainer.fit` stopped"]


def _sparse_adagrad_step() -> None:
    table = torch.nn.Embedding(10, 2, sparse=True)
    optimizer = torch.optim.Adagrad(table.parameters())
    table(torch.tensor([1, 2, 2])).sum().backward()
    optimizer.step()


def test_the_harmless_warnings_are_filtered_where_they_come_from_only():
    from pytorch_lightning.utilities._pytree import _tree_flatten
    from torch.utils._pytree import LeafSpec

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.quiet()
        _sparse_adagrad_step()  # torch's Adagrad: filtered
        _tree_flatten(1)  # Lightning's pytree copy building a LeafSpec: filtered
        assert not caught, [str(w.message) for w in caught]
        LeafSpec()  # the same deprecation from anywhere else still shows
        warnings.warn("Sparse invariant checks are implicitly disabled (elsewhere)", UserWarning, stacklevel=1)
    assert len(caught) == 2


def test_lightnings_info_lines_are_off_and_its_warnings_stay():
    quiet.quiet()
    assert not logging.getLogger("pytorch_lightning.utilities.rank_zero").isEnabledFor(logging.INFO)
    assert logging.getLogger("pytorch_lightning.utilities.rank_zero").isEnabledFor(logging.WARNING)


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch):
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: True, write=sys.__stderr__.write))
    [bar] = progress_callbacks(True)
    assert isinstance(bar, EpochBar)
    bar._trainer = SimpleNamespace(current_epoch=1, max_epochs=2)  # the last epoch of two
    assert bar._get_train_description(1).strip() == "Epoch 2/2"
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: False, write=sys.__stderr__.write))
    assert [type(c) for c in progress_callbacks(True)] == [PlainProgress]
    assert progress_callbacks(False) == []


def test_memory_text_reports_this_process_now_and_at_its_peak_in_gib():
    now, peak = map(float, re.fullmatch(r"rss (\d+\.\d+) GiB \(peak (\d+\.\d+)\)", memory_text()).groups())
    # a unit slip (ru_maxrss is KiB on Linux, bytes on macOS) would put the peak 1024x off, past the machine's RAM
    assert 0.01 < now <= peak < psutil.virtual_memory().total / 2**30


@pytest.mark.slow
def test_a_bench_run_in_a_log_prints_no_known_noise_and_no_carriage_return(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WANDB_") and k not in ("RETRIEVAL_ZOO_WANDB", "FORCE_COLOR", "COLUMNS")}
    env |= {"WANDB_DIR": str(tmp_path / "wb"), "WANDB_DATA_DIR": str(tmp_path / "wb-data"),
            "WANDB_CACHE_DIR": str(tmp_path / "wb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wb-config")}
    log = tmp_path / "bench.log"
    with open(log, "wb") as out:  # a file, not a terminal: what CI and `> bench.log` see
        done = subprocess.run(
            [sys.executable, "-m", "retrieval_zoo", "bench", "--model", "light_two_tower", "--dataset",
             "simshop-tiny", "--set", "trainer.max_epochs=2", "data.max_train_examples=256",
             "validation.max_queries=100", "--results", str(tmp_path / "results"), "--wandb", "offline"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=600)
    text = log.read_bytes().decode()
    assert done.returncode == 0, text
    assert "\r" not in text
    for noise in KNOWN_NOISE:
        assert noise not in text, noise
    assert not [line for line in text.splitlines() if "warn" in line.lower()], text
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], text
    assert all("train/loss" in line and "val/ndcg@10" in line for line in epochs)
    assert all(re.search(r"rss \d+\.\d\d GiB \(peak \d+\.\d\d\)", line) for line in epochs), epochs
    assert [line for line in text.splitlines() if line.startswith("inputs ready in ") and "GiB" in line], text
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*")), "the W&B run follows WANDB_DIR"


class _FrozenCopyModel(pytorch_lightning.LightningModule):
    """A trainable layer and a reference copy kept in eval mode on purpose (as QuerySentenceTuning's original)."""

    def __init__(self, stray_eval: bool):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.reference = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
        self.reference.kept_in_eval = True
        self.stray = torch.nn.Dropout(0.1)  # left in eval mode by mistake when stray_eval
        self.stray_eval = stray_eval
        self.train()  # Lightning keeps the modes a model has as fit starts: these are what it checks

    def train(self, mode: bool = True):
        super().train(mode)
        self.reference.eval()
        if self.stray_eval:
            self.stray.eval()
        return self

    def training_step(self, batch, batch_idx):
        return self.layer(self.stray(self.reference(batch[0]))).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)


@pytest.mark.parametrize("stray_eval", [False, True])
def test_lightnings_eval_mode_warning_is_filtered_only_for_modules_kept_in_eval_by_design(stray_eval, tmp_path):
    model = _FrozenCopyModel(stray_eval)
    assert quiet.kept_in_eval_count(model) == 3  # the Sequential, its Linear and its Dropout
    model.reference[0].train()
    assert quiet.kept_in_eval_count(model) == 2  # only those in eval mode now: what Lightning counts
    model.train()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), batch_size=2)
    trainer = pytorch_lightning.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                                        enable_progress_bar=False, enable_model_summary=False,
                                        default_root_dir=tmp_path, callbacks=[quiet.Quiet()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, loader)
    eval_warnings = [str(w.message) for w in caught if "in eval mode at the start of training" in str(w.message)]
    # a module left in eval mode by mistake changes the count, so the warning shows (4 modules: 3 + the stray)
    assert eval_warnings == (["Found 4 module(s) in eval mode at the start of training. This may lead to unexpected "
                              "behavior during training. If this is intentional, you can ignore this warning."]
                             if stray_eval else [])


def test_the_pretrained_query_tuning_marks_its_frozen_copy():
    from retrieval_zoo.models.minilm import QuerySentenceTuning  # the packaged all-MiniLM-L6-v2

    tuning = QuerySentenceTuning(trainable_layers=1).train()
    in_eval = sum(1 for module in tuning.modules() if not module.training)
    assert in_eval == quiet.kept_in_eval_count(tuning) > 0
