"""``prepare(name)``: fetch a real dataset's official files if needed, verify them, build the cached dataset.

Behind ``make data DATASET=<name>``. With the files already on disk nothing is downloaded: they are verified
(Git LFS pointers, checksums, columns) and the canonical dataset is built once into the cache, so that later
loads are fast. A download that fails says exactly which files to fetch by hand and where to put them.

Downloads go through pooch (temporary file moved into place when complete, known-hash check, progress bar);
what pooch does not do stays here: Git LFS pointer detection, ``file://`` URLs, the by-hand error listing and
``download=false``. docs/libraries.md says what was replaced and why the rest was kept.
"""

from __future__ import annotations

import logging
import shutil
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pooch

from retrieval_zoo.data import esci, icecat, local, registry, sqid
from retrieval_zoo.data.checks import as_bool, is_lfs_pointer, read_sha256sums, remember_sha256, sums_file_for
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset

DOWNLOAD_TIMEOUT_S = 60  # seconds without a byte (connect or read) before a download fails
DOWNLOAD_CHUNK_BYTES = 1 << 20
PREPARABLE = ("esci", "sqid", "icecat", "local")


def prepare(name: str, path: str | Path | None = None, download: bool | str = True, **params) -> ProductSearchDataset:
    """Make dataset ``name`` ready to load and return it (parameters as for its loader, strings accepted).

    - ``esci``: the two official parquet files in ``path`` (default ``<cache>/esci/raw``), downloaded from
      amazon-science/esci-data when missing.
    - ``sqid``: the SQID files in ``path`` (default ``<cache>/sqid/raw``) plus the ESCI files
      (``esci_path=``), both downloaded when missing.
    - ``icecat``: the Icecat/Chorus folder (default ``../shared/data/icecat-chorus``); downloaded from
      querqy/chorus into ``<cache>/icecat/raw`` when no folder exists.
    - ``local``: your folder (``path`` required); only verified and loaded.
    """
    preparers: dict[str, Callable[..., ProductSearchDataset]] = {
        "esci": _prepare_esci, "sqid": _prepare_sqid, "icecat": _prepare_icecat, "local": _prepare_local,
    }
    if name not in preparers:
        raise DatasetError(f"cannot prepare '{name}'; preparable datasets: {', '.join(PREPARABLE)}")
    return preparers[name](path, as_bool(download, "download"), **params)


def _prepare_esci(path, download: bool, **params) -> ProductSearchDataset:
    raw = esci.esci_raw_dir(path)
    fetch_missing(raw, esci.DOWNLOAD_URLS, download, sums_file=sums_file_for(raw, "esci"),
                  how_to="or `git lfs pull` in a clone of amazon-science/esci-data")
    return esci.load_esci(raw, **params)


def _prepare_sqid(path, download: bool, esci_path=None, **params) -> ProductSearchDataset:
    esci_raw = esci.esci_raw_dir(esci_path)
    fetch_missing(esci_raw, esci.DOWNLOAD_URLS, download, sums_file=sums_file_for(esci_raw, "esci"),
                  how_to="or `git lfs pull` in a clone of amazon-science/esci-data")
    raw = sqid.sqid_raw_dir(path)
    fetch_missing(raw, sqid.DOWNLOAD_URLS, download, sums_file=sums_file_for(raw, "sqid"),
                  how_to="or `git lfs pull` in a clone of Crossing-Minds/shopping-queries-image-dataset (sqid/)")
    return sqid.load_sqid(raw, esci_raw, **params)


def _prepare_icecat(path, download: bool, **params) -> ProductSearchDataset:
    raw = icecat.icecat_raw_dir(path)
    if not raw.is_dir() and path is None:
        raw = registry.cache_dir() / "icecat" / "raw"
    fetch_missing(raw, icecat.DOWNLOAD_URLS, download, sums_file=sums_file_for(raw, "icecat-chorus"),
                  how_to="renamed as listed, from a clone of querqy/chorus")
    return icecat.load_icecat(raw, **params)


def _prepare_local(path, download: bool, **params) -> ProductSearchDataset:
    if path is None:
        raise DatasetError("prepare('local') needs path=<your folder>; see datasets/local/README.md")
    return local.load_local(path, **params)


def fetch_missing(
    folder: Path, urls: dict[str, str], download: bool, *, how_to: str, sums_file: Path | None = None
) -> list[Path]:
    """Download the files of ``urls`` that are absent from ``folder`` (or are only Git LFS pointers).

    A file with exactly one sha256 recorded in ``sums_file`` is checked against it as it arrives (a file with
    several published versions, or none recorded, is checked by the loader afterwards). Raises DatasetError
    listing every file still missing, its URL, where to put it and why it could not be fetched.
    """
    folder = Path(folder)
    wanted = [name for name in urls if not (folder / name).is_file() or is_lfs_pointer(folder / name)]
    if not wanted:
        return []
    failures: dict[str, str] = {}
    if download:
        recorded = read_sha256sums(sums_file) if sums_file is not None and Path(sums_file).is_file() else {}
        folder.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            known = sorted(recorded.get(name, ()))
            try:
                download_file(urls[name], folder / name, known_hash=known[0] if len(known) == 1 else None)
            except (OSError, ValueError) as error:  # requests/urllib errors are OSErrors, pooch's hash check ValueError
                failures[name] = " ".join(str(getattr(error, "reason", error)).split())  # one line per file
    else:
        failures = {name: "downloads disabled (download=false)" for name in wanted}
    if failures:
        lines = "\n".join(f"  {urls[n]}\n    -> {folder / n}   ({why})" for n, why in failures.items())
        raise DatasetError(
            f"could not get {len(failures)} file(s); fetch them by hand ({how_to}) and put them here:\n{lines}\n"
            f"then run the preparation again"
        )
    return [folder / name for name in wanted]


def download_file(url: str, destination: Path, known_hash: str | None = None) -> None:
    """Fetch ``url`` to ``destination`` with pooch, checked against ``known_hash`` (sha256 hex) when given.

    pooch streams into a temporary file and moves it into place only once complete and verified, so an
    interrupted or corrupt download never passes for the data. It works in a private staging folder beside
    the destination (``.<name>.download``, removed afterwards and cleared first of what a killed run left), so
    that a Git LFS pointer standing at the destination is replaced only by a finished download, and a
    download that turns out to be a Git LFS pointer (which pooch cannot tell) is refused and never lands.
    """
    destination = Path(destination)
    staging = destination.with_name(f".{destination.name}.download")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"downloading {url} -> {destination}", flush=True)
    try:
        with _pooch_quiet():
            fetched = Path(pooch.retrieve(url, f"sha256:{known_hash}" if known_hash else None,
                                          fname=destination.name, path=staging, downloader=_downloader(url)))
        _refuse_lfs_pointer(fetched)  # again, for the schemes pooch downloads by itself
        fetched.replace(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if known_hash:  # pooch has just hashed it: spare the loader a second pass over a 1 GB file
        remember_sha256(destination, known_hash)


def _downloader(url: str):
    """pooch's HTTP downloader with larger chunks, or a copy for ``file://`` (which pooch lacks: local mirrors,
    tests), each refusing a Git LFS pointer before pooch checks the hash (a clearer reason than a mismatch);
    None lets pooch choose (ftp, sftp, doi; any other scheme is its ValueError)."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        # pooch streams 1 KiB at a time by default: one Python loop turn per KiB of a 1 GB file.
        inner = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(),  # no carriage-return stream in CI logs
                                     chunk_size=DOWNLOAD_CHUNK_BYTES, timeout=DOWNLOAD_TIMEOUT_S)
    elif scheme == "file":
        inner = _copy_file_url
    else:
        return None

    def download(url: str, output_file: str, pooch_instance=None, check_only: bool = False) -> None:
        inner(url, output_file, pooch_instance)
        _refuse_lfs_pointer(Path(output_file))

    return download


def _copy_file_url(url: str, output_file: str, pooch_instance=None) -> None:
    shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), output_file)


def _refuse_lfs_pointer(path: Path) -> None:
    if is_lfs_pointer(path):
        raise DatasetError("the server returned a Git LFS pointer instead of the data")


@contextmanager
def _pooch_quiet():
    """Keep pooch's INFO lines out of the output: its "Downloading ... to <staging path>" and, with no known
    hash, advice to pass the sum to ``pooch.retrieve``; we print our own line, and the loader warns with the
    sum to add to SHA256SUMS."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
