"""Every shipped model config and variant, as a user gets it: it loads with every key checked, builds, and trains
one step on simshop-tiny through the runner (a typo in any model YAML key fails here)."""

from __future__ import annotations

import math

import pytest
import yaml

import retrieval_zoo as rz
from retrieval_zoo.models import ConfigError, list_models, list_variants, load_config
from retrieval_zoo.models.registry import config_path
from retrieval_zoo.runner import run_benchmark

SHIPPED = [(model, variant) for model in list_models() for variant in list_variants(model)]
ONE_STEP = ["trainer.max_steps=1", "trainer.max_epochs=1", "data.eval_batch_size=256", "validation.max_queries=20"]


@pytest.fixture(scope="module")
def tiny():
    return rz.load_dataset("simshop-tiny")


@pytest.mark.slow
@pytest.mark.parametrize(("model", "variant"), SHIPPED, ids=[f"{m}/{v}" for m, v in SHIPPED])
def test_every_shipped_config_and_variant_builds_and_trains_one_step(model, variant, tiny, tmp_path):
    overrides = ONE_STEP + (["trainer.max_steps=0"] if model == "minilm_zeroshot" else [])
    [result] = run_benchmark(model, tiny, [0], None if variant == "default" else variant, overrides, tmp_path,
                             wandb="disabled", progress=False, print_table=False)
    assert math.isfinite(result.metrics["ndcg@10"]) and 0.0 <= result.metrics["ndcg@10"] <= 1.0
    if result.costs.get("trainable_params", 0) > 0 and model != "minilm_zeroshot":
        assert result.costs["epochs_trained"] == 1  # the step ran, and selection saw the start and that epoch
        assert result.costs["best_epoch"] in (0, 1)


@pytest.mark.parametrize("section", ["data", "eval", "validation", "index", "scheduler"])
def test_a_typo_in_a_model_yaml_key_fails_at_load_naming_the_file_and_key(section, tmp_path):
    own = yaml.safe_load(config_path("light_two_tower").read_text())
    own[section] = {**(own.get(section) or {}), "typo_key": 1}
    path = tmp_path / "light_two_tower.yaml"
    path.write_text(yaml.safe_dump(own))
    with pytest.raises(ConfigError, match=rf"{path.name}.*unknown config key '{section}.typo_key'"):
        load_config("light_two_tower", config_file=path)


def test_an_unknown_section_in_a_model_yaml_fails_at_load(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {}\ntrainr: {max_epochs: 2}\n")
    with pytest.raises(ConfigError, match="unknown section 'trainr'"):
        load_config("light_two_tower", config_file=path)


@pytest.mark.parametrize("model", [m for m in list_models() if rz.models.registry.model_entry(m).config_class])
def test_the_typed_config_defaults_are_the_shipped_yaml_values(model):
    """A model built from its dataclass alone (a notebook, a test) behaves as the shipped YAML config."""
    import dataclasses

    shipped = yaml.safe_load(config_path(model).read_text())["model"]
    for field in dataclasses.fields(rz.models.registry.model_entry(model).config_class):
        if field.name in shipped and field.default is not dataclasses.MISSING:
            assert field.default == shipped[field.name], f"{model}: model.{field.name}"


TWO_TOWER_DEFAULTS = [m for m in list_models() if m not in ("bm25", "minilm_zeroshot")]


@pytest.mark.slow
@pytest.mark.parametrize("model", TWO_TOWER_DEFAULTS)
def test_the_shipped_encoding_batch_gives_the_vectors_of_any_other_batch_size(model, tiny):
    """A row's config hash sees ``data.eval_batch_size`` as 1024 whatever it is (runner.SPEED_ONLY_KEY): it may
    change speed only. Every row of a batch is encoded on its own, so the catalogue's vectors must not depend on it beyond
    float rounding (a batch of 1 takes other BLAS kernels: ~1e-7 apart)."""
    import numpy as np
    import torch

    from retrieval_zoo.models import build_model
    from retrieval_zoo.runner import data_module_for

    config = load_config(model)
    torch.manual_seed(0)
    module = build_model(config)
    datamodule = data_module_for(config, tiny, module, seed=0)
    datamodule.setup()
    module.attach(datamodule)
    shipped = module.encode_catalog(batch_size=int(config["data"]["eval_batch_size"]), progress=False)
    for other in (1, 1024, len(module.catalog)):
        np.testing.assert_allclose(module.encode_catalog(batch_size=other, progress=False), shipped, rtol=0,
                                   atol=1e-6, err_msg=f"{model}: eval batch {other}")

