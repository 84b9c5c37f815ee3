"""Interrupts that end a run honestly: ``interrupts_raise()`` (installed by ``python -m retrieval_zoo``) turns
SIGINT and SIGTERM into ``Interrupted``, a ``BaseException`` that PyTorch Lightning's ``trainer.fit`` re-raises
after its own cleanup (Lightning 2.6 would otherwise exit 1 on Ctrl-C, and turn SIGTERM into
``SIGTERMException``, a ``SystemExit`` whose status is 0). ``commit_guard()`` holds an interrupt back until a
commit (the run folders and the leaderboard, ``store.commit``) is whole.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):  # noqa: N818 - a BaseException, like KeyboardInterrupt
    """SIGINT or SIGTERM arrived. A BaseException so that ``except Exception`` blocks (W&B, optional imports)
    do not swallow it; Lightning's ``trainer.fit`` runs its ``on_exception`` hooks and re-raises it."""

    def __init__(self, signum: int, committed: bool = False):
        super().__init__(signum)
        self.signum = int(signum)
        self.committed = committed  # raised right after a commit_guard block finished

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_COMMITS = [0]  # commit_guard blocks completed in this process (read by the command line's interrupt message)


def commits_done() -> int:
    return _COMMITS[0]


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise ``Interrupted``; the previous handlers come back afterwards.
    A no-op outside the main thread (Python delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in EXIT_CODES}
    for signum in EXIT_CODES:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def commit_guard() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while a commit (e.g. the leaderboard write) runs, so it is never half-done.

    A signal that arrived inside is acted on when the block ends: with ``interrupts_raise`` active, as
    ``Interrupted(committed=True)`` (or ``committed=False`` if the block failed); otherwise the signal is
    re-delivered to the previous handler. The block counts in ``commits_done()`` once it completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        _COMMITS[0] += 1
        return
    pending: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in EXIT_CODES}
    for signum in EXIT_CODES:
        signal.signal(signum, lambda signum, frame: pending.append(signum))
    completed = False
    try:
        yield
        completed = True
        _COMMITS[0] += 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if pending:
            if previous[pending[0]] is _raise_interrupted:
                raise Interrupted(pending[0], committed=completed)
            signal.raise_signal(pending[0])
