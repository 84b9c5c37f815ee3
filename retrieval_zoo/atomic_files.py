"""Whole-file writes that a reader never sees half done: write a sibling temporary file, then rename it over the
target (atomic on one file system). The temporary name carries the process id, so two processes writing the same
file (two plan runs sharing a results folder or a cache) never write into each other's temporary file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, payload: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(payload, indent=indent, sort_keys=True, default=str))


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` for writers that want a file name (``np.save``, ``savefig``,
    ``open_memmap``); it replaces ``path`` when the block ends without an error and is removed otherwise.

    The temporary name keeps ``path``'s suffix (``x.<pid>.tmp.npy``), so writers that pick the format from the
    name, or append one, write exactly that file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
