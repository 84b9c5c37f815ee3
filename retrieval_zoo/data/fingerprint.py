"""Datasets identified by content: a fingerprint of the files a folder-backed dataset is read from.

Two users (or two working directories) that pass the same ``local:path=data/shop`` may mean different data,
and ``my shop`` and ``my_shop`` or ``dir`` and ``dir/`` are one string apart. The runner therefore keys a
dataset given by ``path=`` on its resolved folder name plus a hash of its files (name, size and content),
so the board never pools two datasets and never splits one. Hashing a multi-GB ESCI folder takes a while, so
each file's hash is cached by (resolved path, size, mtime) in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from retrieval_zoo import atomic_files

CACHE_FILE = "fingerprints.json"
CHUNK = 1 << 22


def folder_fingerprint(folder: str | Path, cache: Path | None = None) -> str:
    """sha256 (hex) over the sorted (relative path, size, sha256 of content) of every visible file below
    ``folder``; a single file is hashed alone. Cached per file in ``cache`` (a JSON file) when given."""
    root = Path(folder).expanduser().resolve()
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                               p.relative_to(root).parts))
    known = _read_cache(cache)
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in known:
            known[key] = _file_sha256(path)
        name = path.name if path == root else path.relative_to(root).as_posix()
        digest.update(f"{name}\0{stat.st_size}\0{known[key]}\n".encode())
    _write_cache(cache, known)
    return digest.hexdigest()


def dataset_key(spec: str, params: dict[str, str], fingerprint: str | None) -> str:
    """The board's name for a dataset: the spec as a slug, or for a folder-backed spec (``path=``) its name,
    the resolved folder's name and the first 8 hex digits of its content fingerprint."""
    if fingerprint is None or "path" not in params:
        return slug(spec)
    name = spec.partition(":")[0]
    folder = Path(params["path"]).expanduser().resolve()
    others = ",".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "path")
    readable = f"{name}-{folder.name}" + (f"-{others}" if others else "")
    return f"{slug(readable)}@{fingerprint[:8]}"


def slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec.replace(":", "-"))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(cache: Path | None) -> dict[str, str]:
    if cache is None or not cache.exists():
        return {}
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):  # a damaged cache is only a cache: hash again
        return {}


def _write_cache(cache: Path | None, known: dict[str, str]) -> None:
    if cache is None:
        return
    atomic_files.write_json(cache, known, indent=None)
