"""Interrupts (interrupts.py): the exception and its exit codes, handlers restored after each block, and a
commit_guard that holds a signal until the block ends (raised, re-delivered, or left alone).

(interrupts_raise + commit_guard together on SIGTERM are also exercised in test_preflight.py.)
"""

from __future__ import annotations

import signal
import threading

import pytest

from retrieval_zoo.interrupts import EXIT_CODES, Interrupted, commit_guard, commits_done, interrupts_raise


@pytest.fixture
def recording_handler():
    """A Python SIGTERM handler that records instead of exiting; the original handler comes back afterwards."""
    received: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, original)


def test_interrupted_names_the_signal_and_its_exit_code():
    stop = Interrupted(signal.SIGINT)
    assert stop.name == "SIGINT" and stop.exit_code == 130 and stop.signum == 2 and not stop.committed
    assert Interrupted(signal.SIGTERM, committed=True).exit_code == EXIT_CODES[signal.SIGTERM] == 143
    assert not isinstance(stop, Exception)  # `except Exception` blocks do not swallow it


def test_interrupts_raise_restores_the_previous_handlers(recording_handler):
    before = {signum: signal.getsignal(signum) for signum in EXIT_CODES}
    with pytest.raises(Interrupted) as stopped, interrupts_raise():
        signal.raise_signal(signal.SIGTERM)
    assert stopped.value.name == "SIGTERM" and not stopped.value.committed
    assert {signum: signal.getsignal(signum) for signum in EXIT_CODES} == before
    assert recording_handler == []  # the previous handler never saw it


def test_commit_guard_redelivers_to_the_previous_handler_after_the_block(recording_handler):
    done = commits_done()
    steps = []
    with commit_guard():
        signal.raise_signal(signal.SIGTERM)
        steps.append(list(recording_handler))  # held back while the block runs
    assert steps == [[]] and recording_handler == [signal.SIGTERM]
    assert commits_done() == done + 1


def test_a_failed_commit_is_not_counted_and_says_so():
    done = commits_done()
    with pytest.raises(Interrupted) as stopped, interrupts_raise(), commit_guard():
        signal.raise_signal(signal.SIGINT)
        raise RuntimeError("the write failed")
    assert stopped.value.exit_code == 130 and not stopped.value.committed
    assert isinstance(stopped.value.__context__, RuntimeError)
    assert commits_done() == done


def test_a_quiet_commit_raises_nothing_and_counts(recording_handler):
    done = commits_done()
    with interrupts_raise(), commit_guard():
        pass
    assert commits_done() == done + 1 and recording_handler == []


def test_outside_the_main_thread_both_are_no_ops_that_still_count():
    results = {}

    def worker():
        before = commits_done()
        with interrupts_raise(), commit_guard():
            results["handler"] = signal.getsignal(signal.SIGTERM)
        results["counted"] = commits_done() - before

    main_handler = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert results == {"handler": main_handler, "counted": 1}
