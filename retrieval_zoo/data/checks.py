"""Checks shared by the real-data loaders: raw files that are really there, intact, and shaped as expected.

Every check raises :class:`DatasetError` with a one-line message that says what is wrong and how to fix it;
every repair (dropping a bad row, replacing undecodable bytes) returns a count so that the loader can record
it in ``meta["dropped"]`` / ``meta["repaired"]``: nothing is lost silently.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import polars as pl
import pooch
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval_zoo import atomic_files
from retrieval_zoo.data import registry  # the module, not its functions: registry may import the loaders
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
# A pointer file is ~130 bytes; anything much larger is real data even if it happens to start alike.
_LFS_POINTER_MAX_BYTES = 1024
# The repository's datasets/ folder (recorded checksums, READMEs); absent when installed from a wheel.
DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"

INTEGER_TYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
TEXT_TYPES = (pl.Utf8, pl.Categorical, pl.Enum)


# -- files that are really there --------------------------------------------------------------------------
def is_lfs_pointer(path: Path) -> bool:
    """True for a Git LFS pointer: the small text stub a clone without ``git lfs`` leaves instead of the data."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size > _LFS_POINTER_MAX_BYTES:
        return False
    with path.open("rb") as handle:
        return handle.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX


def require_data_file(path: Path, *, source_url: str, fix_hint: str = "") -> Path:
    """Fail early, with the fix, when a raw file is missing or is only a Git LFS pointer."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: download it from {source_url} and put it at {path}"
            + (f" ({fix_hint})" if fix_hint else "")
        )
    if is_lfs_pointer(path):
        raise DatasetError(
            f"{path.name} is a Git LFS pointer, not the data: run `git lfs pull` in your "
            f"{fix_hint or 'repository'} clone or download the real file from {source_url} and put it at {path}"
        )
    return path


# -- checksums --------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """sha256 (hex) of a file's content, streamed (pooch's ``file_hash``: as fast as a hand-written loop)."""
    return pooch.file_hash(str(path), alg="sha256")


def cached_sha256(path: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so a 1 GB parquet is hashed once, not on every load.

    pooch has no such memo (it hashes the file again on every ``retrieve``), hence this one.
    """
    key, memo_file = _memo_key(path), registry.cache_dir() / "checksums.json"
    memo = _read_json(memo_file)
    if key not in memo:
        memo[key] = sha256_of(path)
        atomic_files.write_json(memo_file, memo, indent=1)
    return memo[key]


def remember_sha256(path: Path, digest: str) -> None:
    """Record a sum just verified elsewhere (a download checked against its known hash), so that
    :func:`cached_sha256` does not read the file again."""
    memo_file = registry.cache_dir() / "checksums.json"
    memo = _read_json(memo_file)
    memo[_memo_key(path)] = digest.lower()
    atomic_files.write_json(memo_file, memo, indent=1)


def _memo_key(path: Path) -> str:
    path = Path(path).resolve()
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def read_sha256sums(sums_file: Path) -> dict[str, set[str]]:
    """Parse a ``sha256sum``-style file; a file may be listed more than once (several published versions)."""
    recorded: dict[str, set[str]] = {}
    for line in Path(sums_file).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().lstrip("*")
        if len(digest) != 64 or not name:
            raise DatasetError(f"{sums_file}: malformed line '{line}'; expected '<sha256>  <file name>'")
        recorded.setdefault(name, set()).add(digest.lower())
    return recorded


def verify_sha256(files: Iterable[Path], sums_file: Path | None, *, dataset: str) -> dict[str, str]:
    """Check each file against its recorded sum; return {file name: sha256} (handy as a cache key).

    A mismatch is an error (corrupt or different data); a file without a recorded sum only warns, since some
    official sums are not published and are recorded here after a first verified download.
    """
    recorded = read_sha256sums(sums_file) if sums_file is not None and Path(sums_file).is_file() else {}
    actual: dict[str, str] = {}
    for path in map(Path, files):
        digest = cached_sha256(path)
        actual[path.name] = digest
        expected = recorded.get(path.name)
        if expected is None:
            warnings.warn(
                f"{dataset}: no recorded sha256 for {path.name} (in {sums_file}); its sha256 is {digest}. "
                f"Add it to the SHA256SUMS file once you trust this copy.",
                stacklevel=2,
            )
        elif digest not in expected:
            raise DatasetError(
                f"{dataset}: sha256 mismatch for {path}: got {digest}, expected {' or '.join(sorted(expected))} "
                f"(from {sums_file}); the file is corrupt or a different version: download it again"
            )
    return actual


def recorded_sums_file(name: str) -> Path | None:
    """``datasets/<name>/SHA256SUMS`` in the repository, if this is a source checkout."""
    path = DATASETS_DIR / name / "SHA256SUMS"
    return path if path.is_file() else None


def sums_file_for(raw_dir: Path, name: str) -> Path | None:
    """The data folder's own SHA256SUMS when it has one (e.g. the shared Icecat folder), else the sums
    recorded in the repository for the official files."""
    own = Path(raw_dir) / "SHA256SUMS"
    return own if own.is_file() else recorded_sums_file(name)


def fingerprint(*parts: object) -> str:
    """A short stable hash of the inputs and options a prepared dataset was built from (its cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- columns and types --------------------------------------------------------------------------------------
def require_columns(
    schema: Mapping[str, pl.DataType], expected: Mapping[str, tuple[type[pl.DataType], ...]], *, file: str
) -> None:
    """One-line error naming the missing columns, or the columns whose type is not one of the allowed ones."""
    missing = [column for column in expected if column not in schema]
    if missing:
        raise DatasetError(f"{file}: missing columns {missing} (has {list(schema)})")
    wrong = [
        f"{column} is {schema[column]} (expected {'/'.join(str(t) for t in allowed)})"
        for column, allowed in expected.items()
        if not any(schema[column] == t or isinstance(schema[column], t) for t in allowed)
    ]
    if wrong:
        raise DatasetError(f"{file}: wrong column types: {'; '.join(wrong)}")


def parquet_schema(path: Path) -> dict[str, pl.DataType]:
    try:
        return dict(pl.read_parquet_schema(path))
    except Exception as error:  # polars raises several error types for a file that is not parquet
        raise DatasetError(f"{path} is not a readable parquet file ({error}); download it again") from error


# -- text that is not valid UTF-8 ---------------------------------------------------------------------------
def decode_csv_bytes(path: Path) -> tuple[bytes, int]:
    """The CSV's bytes as valid UTF-8; undecodable bytes become U+FFFD. Returns (bytes, lines repaired)."""
    raw = Path(path).read_bytes()
    try:
        raw.decode("utf-8")
        return raw, 0
    except UnicodeDecodeError:
        pass
    repaired_lines = 0
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            lines[i] = line.decode("utf-8", errors="replace").encode("utf-8")
            repaired_lines += 1
    return b"\n".join(lines), repaired_lines


def iter_parquet_batches(
    path: Path, columns: list[str], repaired: dict[str, int], *, batch_rows: int = 65_536
) -> Iterator[pl.DataFrame]:
    """Stream a parquet file as polars frames of ``batch_rows`` rows, page by page even inside one huge row
    group, so memory stays near one batch (polars' own reader may hold a whole row group's decoded pages).

    String values that are not valid UTF-8 (polars refuses them) are decoded with replacement and counted in
    ``repaired["non_utf8_values"]``.
    """
    repaired.setdefault("non_utf8_values", 0)
    # buffer_size: read column chunks in 1 MiB pieces; without it pyarrow reads a row group's whole column
    # chunks (the full ESCI file, if it is one row group) into memory before decoding the first batch.
    reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    for batch in reader.iter_batches(batch_size=batch_rows, columns=columns):
        arrays = []
        for array in batch.columns:
            if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
                array, n_repaired = _repair_utf8_array(array)
                repaired["non_utf8_values"] += n_repaired
            arrays.append(array)
        yield pl.from_arrow(pa.RecordBatch.from_arrays(arrays, names=batch.schema.names), rechunk=False)


def release_arrow_memory() -> None:
    """Hand pyarrow's freed batch buffers back to the OS (its allocator keeps them otherwise), so that the
    next big allocation, made by polars with its own allocator, does not come on top of them."""
    pa.default_memory_pool().release_unused()


def read_parquet_repairing_utf8(
    path: Path, columns: list[str], row_filter: pl.Expr | None = None
) -> tuple[pl.DataFrame, int]:
    """The fallback when polars refuses a parquet for invalid UTF-8: the rows matching ``row_filter``, with
    bad values decoded with replacement. Returns (frame, values repaired)."""
    repaired: dict[str, int] = {}
    frames = [
        frame.filter(row_filter) if row_filter is not None else frame
        for frame in iter_parquet_batches(path, columns, repaired)
    ]
    if not frames:  # a file without rows still has a schema
        frames = [pl.from_arrow(pq.read_schema(path).empty_table().select(columns))]
    return pl.concat(frames, rechunk=True), repaired["non_utf8_values"]


def _repair_utf8_array(array: pa.Array) -> tuple[pa.Array, int]:
    try:
        array.validate(full=True)
        return array, 0
    except pa.ArrowInvalid:
        pass
    values = array.cast(pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary()).to_pylist()
    repaired = 0
    decoded = []
    for value in values:
        if value is None:
            decoded.append(None)
            continue
        try:
            decoded.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            decoded.append(value.decode("utf-8", errors="replace"))
            repaired += 1
    return pa.array(decoded, type=pa.string()), repaired


def is_utf8_error(error: Exception) -> bool:
    return "utf-8" in str(error).lower() or "utf8" in str(error).lower()


# -- dropping bad rows, counted ---------------------------------------------------------------------------
def blank(column: str) -> pl.Expr:
    """Null, empty or whitespace-only text."""
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def drop_blank(frame: pl.DataFrame, column: str) -> tuple[pl.DataFrame, int]:
    kept = frame.filter(~blank(column))
    return kept, frame.height - kept.height


def drop_duplicates(frame: pl.DataFrame, subset: str | list[str]) -> tuple[pl.DataFrame, int]:
    """Keep the first row of each key (file order), so a re-run keeps the same rows."""
    kept = frame.unique(subset=subset, keep="first", maintain_order=True)
    return kept, frame.height - kept.height


def drop_unknown(frame: pl.DataFrame, column: str, known: pl.Series) -> tuple[pl.DataFrame, int]:
    """Drop rows whose ``column`` value is not among ``known`` (e.g. judgments of unknown products)."""
    kept = frame.filter(pl.col(column).is_in(known.implode()))
    return kept, frame.height - kept.height


def drop_not_in(frame: pl.DataFrame, column: str, allowed: Iterable[str]) -> tuple[pl.DataFrame, int]:
    kept = frame.filter(pl.col(column).is_in(list(allowed)))
    return kept, frame.height - kept.height


# -- split assignment by hash -----------------------------------------------------------------------------
def stable_unit_hash(key: str, seed: int = 0) -> float:
    """A number in [0, 1) from a key, identical on every machine and Python run (unlike ``hash()``)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def unit_hashes(keys: pl.Series, seed: int = 0) -> pl.Series:
    return pl.Series([stable_unit_hash(key, seed) for key in keys.to_list()], dtype=pl.Float64)


# -- parameters that arrive as strings from the CLI --------------------------------------------------------
def as_bool(value: bool | str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise DatasetError(f"parameter {name}={value!r} must be true or false")


def as_float(value: float | str, name: str, low: float = 0.0, high: float = 1.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"parameter {name}={value!r} must be a number") from error
    if not low <= number <= high:
        raise DatasetError(f"parameter {name}={value!r} must lie in [{low}, {high}]")
    return number


def as_int(value: int | str, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"parameter {name}={value!r} must be an integer") from error


def as_choice(value: str, name: str, choices: Iterable[str]) -> str:
    text = str(value).strip().lower()
    choices = tuple(choices)
    if text not in choices:
        raise DatasetError(f"unknown {name} '{value}'; valid values: {', '.join(choices)}")
    return text


# -- prepared-dataset cache ---------------------------------------------------------------------------------
def load_or_build(folder: Path, build: Callable[[], ProductSearchDataset], *, enabled: bool = True):
    """Load the prepared dataset cached in ``folder``, or build it and cache it there.

    The folder name carries a fingerprint of the raw files and options, so a changed input is a new folder;
    a cached copy that no longer validates is rebuilt rather than trusted.
    """
    folder = Path(folder)
    if enabled and (folder / "meta.json").is_file():
        try:
            return ProductSearchDataset.load(folder)
        except (DatasetError, OSError, pl.exceptions.PolarsError) as error:
            warnings.warn(f"ignoring the unreadable cached dataset at {folder} ({error}); rebuilding", stacklevel=2)
    dataset = build()
    if enabled:
        folder.parent.mkdir(parents=True, exist_ok=True)
        dataset.save(folder)
    return dataset


# -- small file helpers -----------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}

