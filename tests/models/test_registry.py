from __future__ import annotations

import pytest

from retrieval_zoo.models import ConfigError, build_model, list_models, list_variants, load_config
from retrieval_zoo.models.base import RetrievalModule


def test_baselines_are_registered():
    assert {"bm25", "minilm_zeroshot", "minilm_finetune", "light_two_tower"} <= set(list_models(baselines=True))


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ConfigError, match="valid models: .*light_two_tower"):
        load_config("no_such_model")


def test_overrides_and_variants_merge_over_defaults():
    config = load_config("light_two_tower", "pretrained", ["model.dim=32", "trainer.max_epochs=2"])
    assert config["model"]["dim"] == 32
    assert config["model"]["pretrained_sentence"] is True
    assert config["trainer"]["max_epochs"] == 2
    assert config["index"]["factory"] == "Flat"  # from defaults.yaml
    assert "pretrained" in list_variants("light_two_tower")


def test_unknown_config_key_names_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.dimm'; valid keys here: .*dim"):
        load_config("light_two_tower", overrides=["model.dimm=3"])


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(ConfigError, match="valid variants: default, pretrained"):
        load_config("light_two_tower", "nope")


def test_malformed_override_is_explained():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("light_two_tower", overrides=["model.dim"])


def test_build_model_gives_a_lightning_module_with_declared_fields():
    module = build_model(load_config("light_two_tower", overrides=["model.n_buckets=1000"]))
    assert isinstance(module, RetrievalModule)
    assert module.required_fields == {"query_hashed", "item_hashed"}
