"""``prepare(name)``: fetch a real dataset's official files if needed, verify them, build the cached dataset.

Behind ``make data DATASET=<name>``. With the files already on disk nothing is downloaded: they are verified
(Git LFS pointers, checksums, columns) and the canonical dataset is built once into the cache, so that later
loads are fast. A download that fails says exactly which files to fetch by hand and where to put them.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from retrieval_zoo.data import esci, icecat, local, registry, sqid
from retrieval_zoo.data.checks import as_bool, is_lfs_pointer
from retrieval_zoo.data.dataset import DatasetError, ProductSearchDataset

DOWNLOAD_TIMEOUT_S = 60
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
    fetch_missing(raw, esci.DOWNLOAD_URLS, download, how_to="or `git lfs pull` in a clone of amazon-science/esci-data")
    return esci.load_esci(raw, **params)


def _prepare_sqid(path, download: bool, esci_path=None, **params) -> ProductSearchDataset:
    esci_raw = esci.esci_raw_dir(esci_path)
    fetch_missing(esci_raw, esci.DOWNLOAD_URLS, download,
                  how_to="or `git lfs pull` in a clone of amazon-science/esci-data")
    raw = sqid.sqid_raw_dir(path)
    fetch_missing(raw, sqid.DOWNLOAD_URLS, download,
                  how_to="or `git lfs pull` in a clone of Crossing-Minds/shopping-queries-image-dataset (sqid/)")
    return sqid.load_sqid(raw, esci_raw, **params)


def _prepare_icecat(path, download: bool, **params) -> ProductSearchDataset:
    raw = icecat.icecat_raw_dir(path)
    if not raw.is_dir() and path is None:
        raw = registry.cache_dir() / "icecat" / "raw"
    fetch_missing(raw, icecat.DOWNLOAD_URLS, download, how_to="renamed as listed, from a clone of querqy/chorus")
    return icecat.load_icecat(raw, **params)


def _prepare_local(path, download: bool, **params) -> ProductSearchDataset:
    if path is None:
        raise DatasetError("prepare('local') needs path=<your folder>; see datasets/local/README.md")
    return local.load_local(path, **params)


def fetch_missing(folder: Path, urls: dict[str, str], download: bool, *, how_to: str) -> list[Path]:
    """Download the files of ``urls`` that are absent from ``folder`` (or are only Git LFS pointers).

    Raises DatasetError listing every file still missing, its URL and where to put it.
    """
    folder = Path(folder)
    wanted = [name for name in urls if not (folder / name).is_file() or is_lfs_pointer(folder / name)]
    if not wanted:
        return []
    failures: dict[str, str] = {}
    if download:
        folder.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            try:
                download_file(urls[name], folder / name)
            except (urllib.error.URLError, OSError, DatasetError) as error:
                failures[name] = str(getattr(error, "reason", error))
    else:
        failures = {name: "downloads disabled (download=false)" for name in wanted}
    if failures:
        lines = "\n".join(f"  {urls[n]}\n    -> {folder / n}   ({why})" for n, why in failures.items())
        raise DatasetError(
            f"could not get {len(failures)} file(s); fetch them by hand ({how_to}) and put them here:\n{lines}\n"
            f"then run the preparation again"
        )
    return [folder / name for name in wanted]


def download_file(url: str, destination: Path) -> None:
    """Stream ``url`` to ``destination`` through a ``.part`` file, so an interrupted download leaves no
    truncated file that could pass for the data."""
    partial = destination.with_name(destination.name + ".part")
    print(f"downloading {url} -> {destination}", flush=True)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)
    if is_lfs_pointer(partial):
        partial.unlink()
        raise DatasetError("the server returned a Git LFS pointer instead of the data")
    partial.replace(destination)
