from __future__ import annotations

import pytest

from retrieval_zoo.models import ConfigError, build_model, list_models, list_variants, load_config
from retrieval_zoo.models.base import RetrievalModule
from retrieval_zoo.models.registry import model_variants


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


def test_every_shipped_model_and_variant_loads():
    for name in list_models():
        for variant in list_variants(name):
            assert load_config(name, variant)["variant"] == variant


@pytest.mark.reliability
@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=abc", "config key trainer.max_epochs expects an integer, got 'abc'; e.g. trainer.max_epochs=10"),
    ("trainer.max_epochs=2.5", "config key trainer.max_epochs expects an integer, got '2.5'"),
    ("model.dim=true", "config key model.dim expects an integer, got 'true'"),
    ("model.dim=null", "config key model.dim expects an integer, got 'null'"),
    ("validation.enabled=1", "config key validation.enabled expects true or false, got '1'"),
    ("optimizer.lr=fast", "config key optimizer.lr expects a number, got 'fast'"),
    ("data.positive_labels=E", "config key data.positive_labels expects a list, got 'E'; e.g. data.positive_labels=[E, S]"),
    ("data.positive_weights=3", "config key data.positive_weights expects a mapping, got '3'; set its keys one by one"),
    ("index.factory=[Flat]", "config key index.factory expects a string, got '[Flat]'"),
])
def test_override_of_the_wrong_type_names_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("light_two_tower", overrides=[override])
    assert str(error.value).startswith(message)


@pytest.mark.reliability
def test_dict_overrides_are_type_checked_too():
    with pytest.raises(ConfigError, match="config key model.dim expects an integer, got 'wide'"):
        load_config("light_two_tower", overrides={"model": {"dim": "wide"}})


def test_overrides_of_compatible_types_pass():
    config = load_config("light_two_tower", overrides=[
        "optimizer.lr=1",                  # an integer is a fine number
        "optimizer.pretrained_lr=0.001",   # a null default takes anything
        "data.max_train_examples=100",
        "trainer.gradient_clip_val=1",
        "trainer.precision=16", "trainer.devices=auto", "trainer.limit_val_batches=0.5",  # Lightning's unions
        "data.positive_weights.S=1",
        "validation.metrics=[ndcg@10, recall@100]",
    ])
    assert config["optimizer"]["lr"] == 1 and config["trainer"]["devices"] == "auto"
    # null where the YAML documents it, also over a variant's value
    assert load_config("light_two_tower", "pretrained", ["optimizer.pretrained_lr=null"])["optimizer"][
        "pretrained_lr"] is None
    assert load_config("minilm_finetune", overrides=["model.trainable_layers=null"])["model"]["trainable_layers"] is None
    assert load_config("bm25", overrides=["model.stopwords=null"])["model"]["stopwords"] is None


@pytest.mark.reliability
def test_override_that_is_not_yaml_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"override 'data.positive_labels=\[E': the value is not valid YAML"):
        load_config("light_two_tower", overrides=["data.positive_labels=[E"])


def test_model_variants_reads_a_comma_list_of_models_and_variants():
    assert model_variants("minilm_zeroshot, mrse/pretrained,,") == [("minilm_zeroshot", "default"),
                                                                     ("mrse", "pretrained")]
    assert model_variants("") == []
