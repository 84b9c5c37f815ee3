"""Is MRSE's expert gate decorative? Average expert weights per query group, per user type and per item kind.

Trains MRSE on simshop the way the board does (``runner.run_benchmark``: the YAML config, model selection on valid,
the kept state; into a scratch results folder, so the board is untouched) or loads a state dict given with
``--checkpoint`` (a board run folder's ``model.pt``, or a file an earlier call saved), then averages the gate's
per-input expert weights (VBert / FtAtt / Light-BERT) over the test searches, split by query group (broad /
text_attr / image_attr) and by the searching user's type (users.parquet: visual or textual, from visual_reliance >=
0.5), and over the catalogue, split by whether a product's colour and style appear only in its image. Writes
results/mrse_gate_weights.csv (mean and per-input standard deviation of each expert's weight) and a bar chart next
to it.

    python benchmarks/mrse_gate_report.py                      # trains (about 10 minutes on 2 CPU cores)
    python benchmarks/mrse_gate_report.py --checkpoint results/mrse_simshop.pt   # trains once, then reuses
    python benchmarks/mrse_gate_report.py --checkpoint results/runs/simshop/mrse/default/seed0/model.pt
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch

from retrieval_zoo.data import load_dataset
from retrieval_zoo.data.datamodule import RetrievalDataModule
from retrieval_zoo.data.features import fields_to_build
from retrieval_zoo.models import build_model, load_config
from retrieval_zoo.models.mrse import EXPERTS
from retrieval_zoo.runner import data_settings, run_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_ceiling import intent_fields  # noqa: E402

SCRATCH_RESULTS = Path("results/diagnostics/mrse_gate")  # git-ignored: a training run for this report only


def trained_module(dataset_name: str, variant: str | None, seed: int, overrides: list[str], checkpoint: Path | None):
    """A RetrievalModule wrapping MRSE, attached to its data module, with the weights of ``checkpoint``; a missing
    checkpoint is first made by training as the board does (``board_state``)."""
    if checkpoint is None or not checkpoint.exists():
        checkpoint = board_state(dataset_name, variant, seed, overrides, checkpoint)
    config = load_config("mrse", variant, overrides)
    L.seed_everything(seed, workers=True, verbose=False)
    dataset = load_dataset(dataset_name)
    module = build_model(config)
    fields = fields_to_build(dataset, module.required_fields, module.optional_fields, "mrse")
    datamodule = RetrievalDataModule(dataset, fields, data_settings(config["data"]), seed)
    module.attach(datamodule)  # extracts (or reads cached) image features, builds the adaptor
    module.model.load_state_dict(model_state(checkpoint))
    return module, datamodule, dataset


def board_state(dataset_name: str, variant: str | None, seed: int, overrides: list[str],
                save_to: Path | None) -> Path:
    """Train one seed with the runner (selection on valid included: the state a board row is scored with) into
    results/diagnostics/ (not the board); the kept ``model.pt``, copied to ``save_to`` when given."""
    result = run_benchmark("mrse", dataset_name, [seed], variant, overrides, SCRATCH_RESULTS, "disabled",
                           progress=False, update_leaderboard=False, print_table=False)[0]
    state = Path(result.run_dir) / "model.pt"  # run_dir starts with the results folder given
    if save_to is None:
        return state
    save_to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(state, save_to)
    return save_to


def model_state(checkpoint: Path) -> dict:
    """The model's weights from a state dict this script saved, or from a run folder's ``model.pt`` (the Lightning
    module's state dict, every key prefixed ``model.``), so a leaderboard or mechanism run can be inspected as is."""
    state = torch.load(checkpoint, weights_only=True)
    if state and all(key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    return state


def named_attribute(intent: str | None) -> str:
    """What an image_attr query names, from simshop's ground-truth intent: a colour, else a print style."""
    fields = intent_fields(intent) if intent else {}
    return "colour" if "color" in fields else "style" if "style" in fields else "neither"


@torch.no_grad()
def query_weights(module, datamodule, units: np.ndarray) -> np.ndarray:
    module.eval()
    chunks = [module.model.expert_weights(batch, "query").numpy() for batch in datamodule.unit_batches(units)]
    return np.concatenate(chunks)


@torch.no_grad()
def item_weights(module, batch_size: int = 2048) -> np.ndarray:
    module.eval()
    n = len(module.catalog)
    chunks = [module.model.expert_weights(module.item_inputs(torch.arange(s, min(s + batch_size, n))), "item").numpy()
              for s in range(0, n, batch_size)]
    return np.concatenate(chunks)


def averages(weights: np.ndarray, side: str, by: str, labels: list) -> list[dict]:
    frame = pl.DataFrame({"value": [str(v) for v in labels], **{e: weights[:, k] for k, e in enumerate(EXPERTS)}})
    table = frame.group_by("value").agg(pl.len().alias("n"), *[pl.col(e).mean() for e in EXPERTS],
                                        *[pl.col(e).std().alias(f"{e}_sd") for e in EXPERTS]).sort("value")
    return [{"side": side, "by": by, **row} for row in table.iter_rows(named=True)]


def report(module, datamodule, dataset) -> pl.DataFrame:
    units = datamodule.units
    test = units.indices_of_split("test")
    q_weights = query_weights(module, datamodule, test)
    rows = averages(q_weights, "query", "all", ["all"] * len(test))
    rows += averages(q_weights, "query", "group", [units.groups[i] for i in test])
    if "intent" in dataset.queries.columns:  # simshop: does the query name a colour (seen in the picture) or a style?
        intent = dict(zip(dataset.queries["query_id"].to_list(), dataset.queries["intent"].to_list(), strict=True))
        rows += averages(q_weights, "query", "names", [named_attribute(intent.get(units.query_ids[i])) for i in test])
    if dataset.users is not None and "user_type" in dataset.users.columns:
        user_type = dict(zip(dataset.users["user_id"].to_list(), dataset.users["user_type"].to_list(), strict=True))
        rows += averages(q_weights, "query", "user_type", [user_type.get(units.user_ids[i]) for i in test])
    i_weights = item_weights(module)
    rows += averages(i_weights, "item", "all", ["all"] * len(i_weights))
    if "image_only" in dataset.products.columns:
        rows += averages(i_weights, "item", "image_only", dataset.products["image_only"].to_list())
    return pl.DataFrame(rows)


def bar_chart(table: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s}: {b}={v}" if b != "all" else f"{s}: all" for s, b, v in table.select("side", "by", "value").rows()]
    positions = np.arange(table.height)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * table.height), 4.5))
    for k, expert in enumerate(EXPERTS):
        ax.bar(positions + (k - 1) * 0.27, table[expert].to_numpy(), width=0.27, label=expert)
    ax.set_xticks(positions, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("mean gate weight")
    ax.set_title("MRSE expert gate: mean weight per query group, user type and item kind (test searches)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="simshop")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, e.g. "
                        "trainer.max_epochs=1")
    parser.add_argument("--checkpoint", type=Path, default=None, help="state dict to read (made by training "
                        "as the board does, and saved there, if missing)")
    parser.add_argument("--out", type=Path, default=Path("results/mrse_gate_weights.csv"))
    args = parser.parse_args()
    module, datamodule, dataset = trained_module(args.dataset, args.variant, args.seed, args.overrides,
                                                 args.checkpoint)
    table = report(module, datamodule, dataset)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write_csv(args.out)
    bar_chart(table, args.out.with_suffix(".png"))
    with pl.Config(tbl_rows=50, float_precision=3):
        print(table)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
