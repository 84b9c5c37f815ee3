"""Frozen encoder outputs computed once: an on-disk cache shared by every model, variant and seed, built in
bounded chunks that survive an interrupt. Sentence features (``text.sentence_features``: MiniLM or any
sentence-transformers model) and open_clip image features (``models/image_features.py``) both live in it.

The caller names the entry's folder and the encoder's identity. The sentence features key an entry by the
encoder and every text it encodes (sha256), so a changed catalogue, another text composition
(``data.features.item_text``) or another encoder never reuses stale vectors: the key is the text content itself,
stricter than a dataset fingerprint; the image features key it by the open_clip config, weights, recipe and the
images' content. An entry's folder (``<cache>/sentence_features/<key>/``, ``<cache>/image_features/<key>/``):

- ``manifest.json``: encoder, rows, width, dtype, chunk size, and ``complete`` once the matrix is whole;
- ``chunks/<first row>.npy`` while building: each chunk of ``chunk_rows`` rows is encoded and written (to a
  process-private name, then renamed) before the next starts, so a killed build loses at most one chunk and the
  next call resumes after the last written one;
- ``features.npy`` when complete: one ``[rows, width]`` matrix, read back as a memory map (the catalogue's
  vectors are paged in as batches touch them instead of copied into every process; copy-on-write, so a
  caller's writes never reach the file).

Reading checks the entry against its manifest (rows, width, dtype, encoder): an entry that does not match (a
truncated file, a manifest from another version) is said in one line and rebuilt. A lock file makes two
processes that need the same entry build it once.

Storage precision: ``float32`` by default, the precision every board row was made with; ``float16`` halves the
disk and page-cache footprint (1.2M ESCI products x 384: 0.9 GB instead of 1.8 GB) and is upcast to float32 when a
batch is gathered (``features.FeatureTable.gather``). Its rounding (relative 2^-11 per component) moves cosine
scores by ~1e-4, so rankings can swap near-ties: a row made with it is a different row (it is part of the config
and its hash).

Sentence entries of the earlier one-file layout (``<key>.npy``) are still read here; image entries of the earlier
one-matrix layout (``features.npy`` and ``meta.json``, no manifest) by ``image_features``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock

from retrieval_zoo import atomic_files

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
ANNOUNCE_ROWS = 1000  # entries at least this large say in the log whether they were read or built
# texts encoded and written per step: what an interrupt can lose (~4 min of MiniLM on 2 CPU cores). Large
# enough that catalogues up to this size are one encode call, as before the chunks: the encoder sorts a call's
# texts by length into batches, so other chunk bounds would move the vectors' last bits
CHUNK_ROWS = 65_536


class StaleCacheEntry(ValueError):
    """A cache entry that does not match its manifest or the request."""


def cached_features(folder: Path, n_rows: int, encoder_identity: str, encode: Callable[[list[int]], np.ndarray],
                    dtype: str = "float32", chunk_rows: int | None = None, label: str = "features",
                    progress: bool | None = None) -> np.ndarray:
    """The ``[n_rows, width]`` matrix of the entry in ``folder``: read when complete, else built (or resumed)
    chunk by chunk with ``encode(rows) -> float32 [len(rows), width]``. Returned as a copy-on-write memory map: a
    caller that writes to it changes its own pages, never the file."""
    wanted = _wanted(n_rows, encoder_identity, dtype)
    legacy = _legacy_entry(folder, dtype)
    if legacy is not None:
        return legacy
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / ".lock"):
        try:
            features = read_entry(folder, wanted)
        except StaleCacheEntry as why:
            print(f"{label}: cache entry {folder.name} is stale ({why}); rebuilding", flush=True)
            shutil.rmtree(folder / "chunks", ignore_errors=True)
            (folder / "features.npy").unlink(missing_ok=True)
            features = None
        if features is not None:
            if n_rows >= ANNOUNCE_ROWS:
                print(f"{label}: {n_rows:,} rows read from the cache ({folder})", flush=True)
            return features
        chunk_rows = chunk_rows or CHUNK_ROWS
        # one bar over the chunks when there are several (within a chunk the encoder may show its own)
        return build_entry(folder, wanted, encode, chunk_rows, label,
                           n_rows > chunk_rows if progress is None else progress)


def cached_only(folder: Path, n_rows: int, encoder_identity: str, dtype: str = "float32") -> np.ndarray | None:
    """The entry's matrix if the cache holds it complete and matching, else None; never encodes, never writes
    (for readers that must not start an hours-long build, like the scale benchmark's index check)."""
    wanted = _wanted(n_rows, encoder_identity, dtype)
    legacy = _legacy_entry(folder, dtype)
    if legacy is not None:
        return legacy
    try:
        return read_entry(folder, wanted)
    except StaleCacheEntry:
        return None


def _legacy_entry(folder: Path, dtype: str) -> np.ndarray | None:
    """The matrix of an entry of the one-file layout (``<key>.npy``, always float32), if there is one."""
    legacy = folder.with_suffix(".npy")
    return np.load(legacy, mmap_mode="c") if dtype == "float32" and legacy.exists() else None


def _wanted(n_rows: int, encoder_identity: str, dtype: str) -> dict:
    if dtype not in DTYPES:
        raise ValueError(f"sentence feature dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return {"format": FORMAT_VERSION, "encoder": encoder_identity, "rows": n_rows, "dtype": dtype}


def read_entry(folder: Path, wanted: dict) -> np.ndarray | None:
    """The complete entry's matrix, None when there is none yet; ``StaleCacheEntry`` when it does not match."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    differing = [key for key, value in wanted.items() if manifest.get(key) != value]
    if differing:
        raise StaleCacheEntry("manifest differs in " + ", ".join(f"{k}={manifest.get(k)!r}" for k in differing))
    if not manifest.get("complete"):
        return None
    try:
        features = np.load(folder / "features.npy", mmap_mode="c")
    except (OSError, ValueError) as error:
        raise StaleCacheEntry(f"features.npy unreadable: {error}") from None
    shape = (wanted["rows"], manifest["width"])
    if features.shape != shape or features.dtype != np.dtype(wanted["dtype"]):
        raise StaleCacheEntry(f"features.npy is {features.dtype}{list(features.shape)}, the manifest says "
                              f"{wanted['dtype']}{list(shape)}")
    return features


def build_entry(folder: Path, wanted: dict, encode: Callable[[list[int]], np.ndarray], chunk_rows: int,
                label: str, progress: bool) -> np.ndarray:
    """Encode the rows not yet in ``chunks/``, one chunk at a time, then join the chunks into ``features.npy``."""
    n_rows = wanted["rows"]
    chunks = folder / "chunks"
    chunks.mkdir(exist_ok=True)
    manifest = {**wanted, "chunk_rows": chunk_rows, "complete": False}
    atomic_files.write_json(folder / "manifest.json", manifest)
    starts = list(range(0, n_rows, chunk_rows))
    done = {start for start in starts if _chunk_is_whole(chunks / f"{start:012d}.npy", min(chunk_rows, n_rows - start))}
    if done:
        print(f"{label}: resuming, {len(done)} of {len(starts)} chunks already encoded", flush=True)
    bar = _progress_bar(n_rows, sum(min(chunk_rows, n_rows - s) for s in done), label, progress)
    width = None
    for start in starts:
        if start in done:
            continue
        rows = list(range(start, min(start + chunk_rows, n_rows)))
        vectors = np.asarray(encode(rows), dtype=np.float32).astype(wanted["dtype"])
        width = vectors.shape[1]
        _save_atomically(chunks / f"{start:012d}.npy", vectors)
        bar.update(len(rows))
    bar.close()
    features = _join_chunks(folder, starts, n_rows, wanted["dtype"], width)
    atomic_files.write_json(folder / "manifest.json", {**manifest, "width": int(features.shape[1]), "complete": True})
    shutil.rmtree(chunks, ignore_errors=True)
    return features


def _chunk_is_whole(path: Path, rows: int) -> bool:
    if not path.exists():
        return False
    try:
        return np.load(path, mmap_mode="c").shape[0] == rows
    except (OSError, ValueError):  # cut off mid-write by an older version: encode it again
        return False


def _join_chunks(folder: Path, starts: list[int], n_rows: int, dtype: str, width: int | None) -> np.ndarray:
    chunks = folder / "chunks"
    if width is None:  # every chunk came from an earlier, interrupted build
        width = np.load(chunks / f"{starts[0]:012d}.npy", mmap_mode="c").shape[1] if starts else 0
    with atomic_files.replacing(folder / "features.npy") as tmp:
        joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, width))
        for start in starts:
            part = np.load(chunks / f"{start:012d}.npy")
            joined[start : start + len(part)] = part
        joined.flush()
        del joined
    return np.load(folder / "features.npy", mmap_mode="c")


def _save_atomically(path: Path, array: np.ndarray) -> None:
    with atomic_files.replacing(path) as tmp:
        np.save(tmp, array)


def _progress_bar(total: int, done: int, label: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=label, unit="text", disable=not show, leave=False)
