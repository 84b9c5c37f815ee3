"""Explicit model registry and YAML configs.

Every model has one YAML file in ``retrieval_zoo/configs/`` (its defaults, every key commented), merged over
``configs/defaults.yaml`` (the sections every model shares: trainer, data, index, eval). A config may name
``variants``: ablations given as overrides of its own keys. Command-line overrides use dotted keys,
``model.dim=64``; a key that is not in the config fails with the list of valid keys, and a value whose type does
not fit the key's (``trainer.max_epochs=abc``) fails naming the key. ``null`` is accepted where the default is
null or the key's YAML comment documents a null value (``pretrained_lr: null  # ... (null: lr)``).

``model.encoder`` (the sentence-transformers model behind frozen sentence features and pretrained starts) is a
key the registry reads itself, for every model whose YAML has it (``encoder_of``): it is taken out of the
``model:`` section before the typed config and the model's constructor see it, and ``build_model`` builds the
model with that encoder active (``text.using_encoder``), so no model class declares or passes it.
"""

from __future__ import annotations

import copy
import re
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
    config_class: type | None = None  # the typed ``model:`` section (a dataclass), see typed_config.py


_MODELS: dict[str, ModelEntry] = {}


class ConfigError(ValueError):
    """A config or override that does not fit; the message names the valid choices."""


def register_model(name: str, factory: type, config: str, description: str, baseline: bool = False,
                   config_class: type | None = None) -> None:
    """Register ``factory`` (a model class) under ``name`` with its YAML ``config`` (a file name in
    ``retrieval_zoo/configs/`` or a path) and ``config_class``, the dataclass of its ``model:`` section."""
    if name in _MODELS:
        raise ValueError(f"model '{name}' is registered twice")
    _MODELS[name] = ModelEntry(name, factory, config, description, baseline, config_class)


def list_models(baselines: bool | None = None) -> list[str]:
    """Registered model names; ``baselines=True``/``False`` keeps only baselines / only zoo models."""
    return sorted(n for n, e in _MODELS.items() if baselines is None or e.baseline == baselines)


def model_variants(text: str) -> list[tuple[str, str]]:
    """A comma list of ``model`` or ``model/variant`` (as benchmark scripts take it) as (model, variant) pairs,
    ``default`` where no variant is named."""
    pairs = []
    for spec in text.split(","):
        model, _, variant = spec.strip().partition("/")
        if model:
            pairs.append((model, variant or "default"))
    return pairs


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
    defaults_path = resources.files("retrieval_zoo") / "configs" / "defaults.yaml"
    own_path = Path(config_file) if config_file else config_path(name)
    defaults, own = _read_yaml(defaults_path), _read_yaml(own_path)
    variants = own.pop("variants", {}) or {}
    config = merge_model_yaml(defaults, own, own_path)
    variant = variant or "default"
    if variant != "default":
        if variant not in variants:
            raise ConfigError(f"model '{name}' has no variant '{variant}'; valid variants: "
                              f"{', '.join(['default', *variants])}")
        config = merge(config, variants[variant], path="", strict=True)
    parsed = parse_overrides(overrides)
    nullable = documented_nullable(defaults_path.read_text()) | documented_nullable(own_path.read_text())
    check_override_types(config, parsed, nullable, _raw_texts(overrides))
    config = merge(config, parsed, path="", strict=True)
    config["name"], config["variant"] = name, variant
    config_class = model_entry(name).config_class
    if config_class is not None:  # every model key and type checked now, before any data or training
        from retrieval_zoo.models.typed_config import typed_section

        typed_section(config_class, own_model_keys(config), f"{own_path.name} (variant {variant}, with --set)")
    encoder = encoder_of(config)
    if encoder is not None:  # a missing encoder fails now, in one line, before any data or training
        from retrieval_zoo.data import text

        text.resolve_encoder(encoder)
    return config


# Sections a model YAML brings itself (checked where they are used: the model's constructor, the loss's, the
# optimizer's) and Lightning's Trainer arguments (Lightning names an unknown one); every other key of a model
# YAML must exist in defaults.yaml, so a typo fails at load instead of being silently ignored.
OWN_SECTIONS = ("model", "loss", "optimizer", "trainer")


def merge_model_yaml(defaults: dict[str, Any], own: dict[str, Any], path: Path | Any) -> dict[str, Any]:
    """defaults.yaml < a model YAML, with the keys outside ``OWN_SECTIONS`` checked against defaults.yaml."""
    config = copy.deepcopy(defaults)
    for section, value in own.items():
        open_section = section in OWN_SECTIONS
        if not open_section and section not in defaults:
            raise ConfigError(f"{path}: unknown section '{section}'; valid sections: "
                              f"{', '.join(sorted([*defaults, *OWN_SECTIONS]))}")
        if isinstance(value, dict) and isinstance(config.get(section), dict):
            try:
                config[section] = merge(config[section], value, section, strict=not open_section)
            except ConfigError as error:
                raise ConfigError(f"{path}: {error}") from None
        else:
            config[section] = copy.deepcopy(value)
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
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or "not valid YAML"
            raise ConfigError(f"override '{item}': the value is not valid YAML ({problem}); quote text and close "
                              "brackets, e.g. data.positive_labels=[E, S]") from None
    return nested


def _raw_texts(overrides: list[str] | dict | None) -> dict[str, str]:
    """``--set`` items as typed: dotted key -> the text after ``=`` (for error messages)."""
    if not overrides or isinstance(overrides, dict):
        return {}
    return {key.strip(): value for key, _, value in (item.partition("=") for item in overrides)}


# Trainer keys that Lightning accepts with more than one type (besides their default's).
FLEXIBLE_KEYS: dict[str, tuple[type, ...]] = {
    "trainer.devices": (int, str, list),
    "trainer.precision": (int, str),
    "trainer.max_time": (str, dict),
    "trainer.gradient_clip_val": (int, float),
    **{f"trainer.{key}": (int, float) for key in ("limit_train_batches", "limit_val_batches",
                                                   "limit_test_batches", "val_check_interval", "overfit_batches")},
}
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


def _kind(value: Any) -> type | None:
    for kind in (bool, int, float, str, list, dict):  # bool before int: True is an int to Python
        if isinstance(value, kind):
            return kind
    if isinstance(value, tuple):
        return list
    return None


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    kind = _kind(value)
    return kind in allowed or (kind is int and float in allowed)  # an integer is a fine number


def check_override_types(config: dict[str, Any], update: dict[str, Any], nullable: set[str] | frozenset = frozenset(),
                         raw: dict[str, str] | None = None, path: str = "") -> None:
    """Every override value must fit the type of the value it replaces (an integer fits a float; anything fits
    a null default; null fits keys in ``nullable``). Keys not in ``config`` are left to ``merge``."""
    raw = raw or {}
    for key, value in update.items():
        where = f"{path}.{key}" if path else key
        if key not in config or config[key] is None:
            continue
        current = config[key]
        if isinstance(current, dict) and isinstance(value, dict):
            check_override_types(current, value, nullable, raw, where)
            continue
        if value is None and where in nullable:
            continue
        allowed = FLEXIBLE_KEYS.get(where, (_kind(current),))
        if value is not None and _fits(value, allowed):
            continue
        wanted = " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in allowed if kind is not None)
        shown = repr(raw[where]) if where in raw else ("null" if value is None else repr(value))
        if isinstance(current, dict):
            hint = f"set its keys one by one, e.g. {where}.{next(iter(current), 'key')}=..."
        else:
            hint = f"e.g. {where}={_yaml_text(current)} (its default)"
        raise ConfigError(f"config key {where} expects {wanted}, got {shown}; {hint}")


def _yaml_text(value: Any) -> str:
    """A value as it would be typed after ``--set key=``."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def documented_nullable(text: str) -> set[str]:
    """Dotted keys of a config YAML whose comment (on the key's line or the comment lines under it) mentions
    ``null``: the keys documented as accepting null."""
    found: set[str] = set()
    stack: list[tuple[int, str]] = []
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if last and re.search(r"\bnull\b", stripped):
                found.add(last)
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w-]*)\s*:", line)
        if not match:
            last = ""
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        last = ".".join(name for _, name in stack)
        comment = line.split("#", 1)[1] if "#" in line else ""
        if re.search(r"\bnull\b", comment):
            found.add(last)
    return found


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
    from retrieval_zoo.data import text
    from retrieval_zoo.losses import build_loss
    from retrieval_zoo.models.base import RetrievalModule, TwoTowerModel

    entry = model_entry(config["name"])
    with text.using_encoder(encoder_of(config)):  # pretrained parts copy, and size themselves by, this encoder
        model = _construct(entry, own_model_keys(config))
        if not isinstance(model, TwoTowerModel):
            return model
        attach_query_tuning(model, config.get("pretrained", {}), entry.name)
    loss_config = dict(config.get("loss", {"name": "softmax"}))
    loss = build_loss(loss_config.pop("name"), **loss_config)
    return RetrievalModule(model, loss, config.get("optimizer"), name=entry.name, scheduler=config.get("scheduler"))


def text_columns_read(config: dict[str, Any], item_text: dict[str, int]) -> set[str]:
    """The product columns a run of ``config`` reads as text (its model class says; see ``text_columns``)."""
    entry = model_entry(config["name"])
    says = getattr(entry.factory, "text_columns", None)
    if says is None:  # a registered class that does not say keeps every text column
        from retrieval_zoo.data.features import ITEM_TEXT_COLUMNS

        return set(ITEM_TEXT_COLUMNS)
    return says(_typed_or_plain(entry, own_model_keys(config)), item_text)


def _typed_or_plain(entry: ModelEntry, section: dict[str, Any]):
    if entry.config_class is None:
        return section
    from retrieval_zoo.models.typed_config import typed_section

    return typed_section(entry.config_class, section, f"model '{entry.name}'")


def _construct(entry: ModelEntry, section: dict[str, Any]):
    if entry.config_class is not None:
        return entry.factory(_typed_or_plain(entry, section))
    try:
        return entry.factory(**section)
    except TypeError as error:
        raise ConfigError(f"model '{entry.name}': {error}") from None


# model keys the registry handles for every model whose YAML has them (see the module docstring)
SHARED_MODEL_KEYS = ("encoder",)


def own_model_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The ``model:`` section without the shared keys: what the model's typed config receives."""
    return {k: v for k, v in (config.get("model") or {}).items() if k not in SHARED_MODEL_KEYS}


def encoder_of(config: dict[str, Any]) -> str | None:
    """``model.encoder`` of a resolved config (None: the model's YAML has no such key)."""
    encoder = (config.get("model") or {}).get("encoder")
    if encoder is not None and (not isinstance(encoder, str) or not encoder.strip()):
        raise ConfigError(f"model.encoder expects a sentence-transformers name or a local folder, got {encoder!r}; "
                          "e.g. model.encoder=all-MiniLM-L6-v2 (its default)")
    return encoder


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
