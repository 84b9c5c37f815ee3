"""Typed model configs: each model declares its ``model:`` section as a dataclass, and the YAML, ``--set`` and
``build_model`` all go through it.

``typed_section(ModelConfig, section, where)`` is the one door: an unknown key, or a value whose type does not
fit the field's annotation, is a ``ConfigError`` naming the key and the file (``where``); the model's
constructor then receives one typed object instead of dozens of keyword flags. Supported annotations: ``int``,
``float`` (an int is accepted), ``bool``, ``str``, ``X | None``, ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``
and ``dict[str, X]``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from retrieval_zoo.models.registry import ConfigError


def typed_section(config_class: type, section: dict[str, Any] | None, where: str) -> Any:
    """``config_class(**section)`` with every key and value checked against the dataclass's fields."""
    section = dict(section or {})
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key model.{unknown[0]}; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(config_class)
    for key, value in section.items():
        if not fits(value, hints[key]):
            raise ConfigError(f"{where}: model.{key} expects {describe(hints[key])}, got {value!r}")
    return config_class(**section)


def fits(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a type annotation (bool is not a number; an int is a float)."""
    if annotation is Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(fits(v, item) for v in value)
    if origin is dict:
        item = args[1] if len(args) == 2 else Any
        return isinstance(value, dict) and all(isinstance(k, str) and fits(v, item) for k, v in value.items())
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {describe(args[0]) if args else 'values'}"
    if origin is dict:
        return f"a mapping of {describe(args[1]) if len(args) == 2 else 'values'}"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
