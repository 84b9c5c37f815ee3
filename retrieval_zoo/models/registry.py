"""Explicit model registry and YAML configs.

Every model has one YAML file in ``retrieval_zoo/configs/`` (its defaults, every key commented), merged over
``configs/defaults.yaml`` (the sections every model shares: trainer, data, index, eval). A config may name
``variants``: ablations given as overrides of its own keys. Command-line overrides use dotted keys,
``model.dim=64``; a key that is not in the config fails with the list of valid keys.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: type
    config: str
    description: str
    baseline: bool = False


_MODELS: dict[str, ModelEntry] = {}


class ConfigError(ValueError):
    """A config or override that does not fit; the message names the valid choices."""


def register_model(name: str, factory: type, config: str, description: str, baseline: bool = False) -> None:
    if name in _MODELS:
        raise ValueError(f"model '{name}' is registered twice")
    _MODELS[name] = ModelEntry(name, factory, config, description, baseline)


def list_models(baselines: bool | None = None) -> list[str]:
    """Registered model names; ``baselines=True``/``False`` keeps only baselines / only zoo models."""
    return sorted(n for n, e in _MODELS.items() if baselines is None or e.baseline == baselines)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ConfigError(f"unknown model '{name}'; valid models: {', '.join(list_models())}")
    return _MODELS[name]


def _read_yaml(path: Path | Any) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def config_path(name: str) -> Path:
    return Path(str(resources.files("retrieval_zoo") / "configs" / model_entry(name).config))


def list_variants(name: str) -> list[str]:
    return ["default", *_read_yaml(config_path(name)).get("variants", {})]


def load_config(name: str, variant: str | None = None, overrides: list[str] | dict | None = None,
                config_file: str | Path | None = None) -> dict[str, Any]:
    """The resolved config of a run: defaults < model YAML (or ``config_file``) < variant < overrides."""
    defaults = _read_yaml(resources.files("retrieval_zoo") / "configs" / "defaults.yaml")
    own = _read_yaml(Path(config_file) if config_file else config_path(name))
    variants = own.pop("variants", {}) or {}
    config = merge(defaults, own, path="", strict=False)
    variant = variant or "default"
    if variant != "default":
        if variant not in variants:
            raise ConfigError(f"model '{name}' has no variant '{variant}'; valid variants: "
                              f"{', '.join(['default', *variants])}")
        config = merge(config, variants[variant], path="", strict=True)
    config = merge(config, parse_overrides(overrides), path="", strict=True)
    config["name"], config["variant"] = name, variant
    return config


def parse_overrides(overrides: list[str] | dict | None) -> dict[str, Any]:
    """``["model.dim=64", "trainer.max_epochs=2"]`` -> nested dict (values parsed as YAML scalars)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return overrides
    nested: dict[str, Any] = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"override '{item}' must look like section.key=value, e.g. model.dim=64")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return nested


def merge(base: dict[str, Any], update: dict[str, Any], path: str, strict: bool) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; with ``strict`` every key must already exist in base."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}.{key}" if path else key
        if strict and key not in result:
            valid = ", ".join(sorted(result)) or "(none)"
            raise ConfigError(f"unknown config key '{where}'; valid keys here: {valid}")
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value, where, strict)
        else:
            result[key] = copy.deepcopy(value)
    return result


def build_model(config: dict[str, Any]):
    """A RetrievalModule (two-tower models) or a retriever object (BM25), from a resolved config."""
    from retrieval_zoo.losses import build_loss
    from retrieval_zoo.models.base import RetrievalModule, TwoTowerModel

    entry = model_entry(config["name"])
    try:
        model = entry.factory(**config.get("model", {}))
    except TypeError as error:
        raise ConfigError(f"model '{entry.name}': {error}") from None
    if not isinstance(model, TwoTowerModel):
        return model
    attach_query_tuning(model, config.get("pretrained", {}), entry.name)
    loss_config = dict(config.get("loss", {"name": "softmax"}))
    loss = build_loss(loss_config.pop("name"), **loss_config)
    return RetrievalModule(model, loss, config.get("optimizer"), name=entry.name, scheduler=config.get("scheduler"))


QUERY_ENCODERS = ("frozen", "finetune")


def attach_query_tuning(model, section: dict[str, Any], name: str) -> None:
    """``pretrained.query_encoder: finetune``: the model's frozen MiniLM query vectors become a fine-tuned
    MiniLM query encoder (``models/minilm.py``, ``QuerySentenceTuning``); only for models that read them."""
    mode = section.get("query_encoder", "frozen")
    if mode not in QUERY_ENCODERS:
        raise ConfigError(f"pretrained.query_encoder must be one of {', '.join(QUERY_ENCODERS)}, got {mode!r}")
    if mode == "frozen":
        return
    if "query_sentence" not in model.required_fields:
        raise ConfigError(f"model '{name}': pretrained.query_encoder=finetune needs a pretrained start that reads "
                          "MiniLM query vectors (e.g. model.pretrained_sentence=true, or the 'pretrained' variant)")
    from retrieval_zoo.models.components import mark_pretrained
    from retrieval_zoo.models.minilm import QuerySentenceTuning

    model.query_sentence_tuning = mark_pretrained(QuerySentenceTuning(int(section.get("trainable_layers", 2))))
    model.required_fields = set(model.required_fields) | {"query_text"}
