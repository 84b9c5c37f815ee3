"""Explicit dataset registry: a name maps to a loader returning a ProductSearchDataset.

Names may carry parameters after a colon, ``simshop:preference_strength=0,n_products=2000``; each loader
decides which parameters it accepts and rejects the others by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., ProductSearchDataset]
    description: str


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Callable[..., ProductSearchDataset], description: str) -> None:
    if name in _DATASETS:
        raise ValueError(f"dataset '{name}' is registered twice")
    _DATASETS[name] = DatasetEntry(name, loader, description)


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def dataset_description(name: str) -> str:
    return _entry(name).description


def parse_dataset_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"simshop:preference_strength=0"`` -> ``("simshop", {"preference_strength": "0"})``."""
    name, _, rest = spec.partition(":")
    params: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise DatasetError(f"dataset parameter '{item}' in '{spec}' must look like key=value")
        params[key.strip()] = value.strip()
    return name, params


def load_dataset(spec: str, **params) -> ProductSearchDataset:
    """Load a registered dataset by name (parameters from the spec string and keywords are merged)."""
    name, spec_params = parse_dataset_spec(spec)
    return _entry(name).loader(**{**spec_params, **params})


def _entry(name: str) -> DatasetEntry:
    if name not in _DATASETS:
        raise DatasetError(f"unknown dataset '{name}'; valid datasets: {', '.join(list_datasets())}")
    return _DATASETS[name]


def path_from_env(name: str, default: str | Path | Callable[[], Path]) -> Path:
    """The folder named by the environment variable ``name``, else ``default``. An empty value means unset, not
    the current folder (``RETRIEVAL_ZOO_CACHE= make bench`` once wrote 55 MB of caches into the working tree).
    A callable default is called only when the variable is unset, so a default under the cache does not create
    the cache folder for a user who named another place."""
    value = os.environ.get(name)
    if value:
        return Path(value)
    return Path(default() if callable(default) else default)


def cache_dir() -> Path:
    """Where prepared datasets and encoder caches live (override with RETRIEVAL_ZOO_CACHE)."""
    root = path_from_env("RETRIEVAL_ZOO_CACHE", Path.home() / ".cache" / "retrieval_zoo")
    root.mkdir(parents=True, exist_ok=True)
    return root


def shared_data_dir() -> Path:
    """The project's ``../shared/data`` (override with RETRIEVAL_ZOO_SHARED_DATA)."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return path_from_env("RETRIEVAL_ZOO_SHARED_DATA", default)
