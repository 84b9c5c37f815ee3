"""docs/adding_a_model.md's walk-through, run as written: a toy model in one file and one YAML is registered,
checked and benchmarked like the shipped ones."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest

from retrieval_zoo.models import ConfigError, load_config, registry
from retrieval_zoo.runner import run_benchmark

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adding_a_model.md"


def guide_block(name: str) -> str:
    """The fenced block that follows ``<!-- toy-model: name -->`` in the guide."""
    match = re.search(rf"<!-- toy-model: {re.escape(name)} -->\s*```\w+\n(.*?)```", GUIDE.read_text(), re.S)
    assert match, f"the guide has no block {name}"
    return match.group(1)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The guide's toy model, registered on a copy of the registry (restored after the test)."""
    (tmp_path / "toy_bag.py").write_text(guide_block("toy_bag.py"))
    (tmp_path / "toy_bag.yaml").write_text(guide_block("toy_bag.yaml"))
    spec = importlib.util.spec_from_file_location("toy_bag", tmp_path / "toy_bag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    registry.register_model("toy_bag", module.ToyBag, str(tmp_path / "toy_bag.yaml"), "toy bag of n-grams",
                            config_class=module.ToyBagConfig)
    return module


def test_the_guides_toy_model_registers_trains_and_is_scored(toy, tmp_path):
    [result] = run_benchmark("toy_bag", "simshop-tiny", seeds=1, variant="wide",
                             overrides=["trainer.max_epochs=2", "data.eval_batch_size=256"],
                             results_dir=tmp_path / "results", wandb="disabled", progress=False, print_table=False)
    assert result.config["model"] == {"dim": 64, "n_buckets": 20000}
    assert math.isfinite(result.metrics["ndcg@10"]) and result.costs["trainable_params"] == 20000 * 64
    assert result.costs["epochs_trained"] >= 1


def test_the_toy_models_keys_are_checked_by_its_config_class(toy, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text(guide_block("toy_bag.yaml").replace("  dim: 32", "  dimm: 32"))
    with pytest.raises(ConfigError, match=r"typo.yaml.*unknown key model.dimm; valid keys: dim, n_buckets"):
        load_config("toy_bag", config_file=typo)
    wrong_type = tmp_path / "wrong_type.yaml"
    wrong_type.write_text(guide_block("toy_bag.yaml").replace("  dim: 32", "  dim: wide"))
    with pytest.raises(ConfigError, match=r"wrong_type.yaml.*model.dim expects an integer, got 'wide'"):
        load_config("toy_bag", config_file=wrong_type)
