"""The results folder as a store that is changed whole or not at all.

One ``bench`` invocation (all its seeds) is one commit: each seed's run folder is written under
``results/runs/.staging/<token>/`` while it runs, and only when the last seed is done are the folders swapped
in and the leaderboard rows written, as one step. The step is made atomic by a journal, as databases do it:

1. ``results/.commit-<token>.json`` names every (staged -> final) move, the board rows and the protocols;
   it is written with an atomic rename, so it exists whole or not at all;
2. each move puts the old final folder aside (``<final>.replaced-<token>``) and renames the staged one in;
3. the board (csv, protocols, md) is rewritten with the rows;
4. the put-aside folders, the staging folder and the journal are removed.

Every step is idempotent, so a journal found on disk (the process died after 1) is rolled forward by
``recover``, which every run and plan calls under the board lock before it starts. A run killed before its
journal exists leaves only its staging folder, which ``recover`` removes once its owner is gone. The board, its
markdown and every run folder the board names therefore always describe one committed state.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from retrieval_zoo import atomic_files

STAGING = ".staging"
_counter = itertools.count()
_active: set[str] = set()  # this process's staging folders still in use (a notebook may outlive a failed run)


@contextmanager
def board_lock(results_dir: Path) -> Iterator[None]:
    """Serialise changes to one results folder between processes (two `make bench` terminals, or two plan
    processes sharing one results folder)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(results_dir / ".leaderboard.lock"):
        yield


def new_staging(results_dir: Path) -> Path:
    """A fresh staging folder owned by this process (its name says which host and pid own it)."""
    token = f"{socket.gethostname()}-{os.getpid()}-{next(_counter)}"
    staging = results_dir / "runs" / STAGING / token
    _active.add(token)
    staging.mkdir(parents=True, exist_ok=False)
    return staging


def staged_path(staging: Path, results_dir: Path, final: Path) -> Path:
    """Where the run folder that will end up at ``final`` is written meanwhile."""
    return staging / Path(final).relative_to(results_dir)


def commit(results_dir: Path, staging: Path, finals: list[Path], rows: list[dict[str, Any]],
           protocols: dict[str, str], write_board) -> None:
    """Swap the staged run folders in at ``finals`` and hand ``rows`` to ``write_board(results_dir, rows,
    protocols)``, as one step (see the module docstring)."""
    moves = [[staged_path(staging, results_dir, f).relative_to(results_dir).as_posix(),
              Path(f).relative_to(results_dir).as_posix()] for f in finals]
    entry = {"staging": staging.relative_to(results_dir).as_posix(), "moves": moves, "rows": rows,
             "protocols": protocols}
    with board_lock(results_dir):
        journal = results_dir / f".commit-{staging.name}.json"
        _active.discard(staging.name)  # from here on the journal, not this process, owns the staged folders
        atomic_files.write_json(journal, entry, indent=None)
        _apply(results_dir, journal, write_board)


def abandon(results_dir: Path, staging: Path) -> None:
    """Drop a failed invocation's staged folders, unless its commit had started (``recover`` finishes that)."""
    _active.discard(staging.name)
    if not (results_dir / f".commit-{staging.name}.json").exists():
        shutil.rmtree(staging, ignore_errors=True)


def recover(results_dir: Path, write_board) -> list[str]:
    """Roll forward every journal left by a killed commit, and remove orphans: staging folders whose owner is
    gone, put-aside folders, and the ``seed<k>.tmp-<pid>`` folders older versions left. Returns what it did."""
    results_dir = Path(results_dir)
    if not results_dir.exists():
        return []
    done = []
    with board_lock(results_dir):
        for journal in sorted(results_dir.glob(".commit-*.json")):
            _apply(results_dir, journal, write_board)
            done.append(f"completed the interrupted commit {journal.name}")
        runs = results_dir / "runs"
        for staging in sorted((runs / STAGING).glob("*")) if (runs / STAGING).is_dir() else []:
            if not _owner_alive(staging.name):
                shutil.rmtree(staging, ignore_errors=True)
                done.append(f"removed the staging folder of a stopped run, {staging.name}")
        for orphan in sorted(itertools.chain(runs.glob("**/*.replaced-*"), runs.glob("**/seed*.tmp-*"))):
            if orphan.is_dir():
                shutil.rmtree(orphan, ignore_errors=True)
                done.append(f"removed the orphan folder {orphan.relative_to(results_dir)}")
        # half-written files of a killed write (a journal never completed, a board file never renamed)
        for partial in sorted(itertools.chain(results_dir.glob(".commit-*.json.tmp-*"), results_dir.glob("*.tmp"))):
            partial.unlink()
            done.append(f"removed the half-written file {partial.name}")
    return done


def _apply(results_dir: Path, journal: Path, write_board) -> None:
    entry = json.loads(journal.read_text())
    token = journal.stem.removeprefix(".commit-")
    for staged_rel, final_rel in entry["moves"]:
        staged, final = results_dir / staged_rel, results_dir / final_rel
        if not staged.exists():  # moved by an earlier, interrupted application of this journal
            continue
        if final.exists():
            final.rename(final.with_name(f"{final.name}.replaced-{token}"))
        final.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(final)
    if entry["rows"]:
        write_board(results_dir, entry["rows"], entry["protocols"])
    for _, final_rel in entry["moves"]:
        final = results_dir / final_rel
        shutil.rmtree(final.with_name(f"{final.name}.replaced-{token}"), ignore_errors=True)
    shutil.rmtree(results_dir / entry["staging"], ignore_errors=True)
    journal.unlink()


def _owner_alive(token: str) -> bool:
    """Whether the process that owns a staging folder still runs (on this host; other hosts' are kept)."""
    host, _, rest = token.rpartition("-")[0].rpartition("-")
    if host != socket.gethostname():
        return True
    try:
        pid = int(rest)
    except ValueError:
        return False
    if pid == os.getpid():
        return token in _active
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

