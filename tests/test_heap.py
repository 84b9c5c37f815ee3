"""retrieval_zoo/heap.py: freed heap memory goes back to the OS (glibc's malloc_trim), result-neutral."""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from retrieval_zoo.heap import release_freed_memory


def test_freed_blocks_held_by_the_heap_go_back_to_the_os():
    process = psutil.Process()
    # 64 KiB blocks come from the heap (below malloc's mmap threshold); freeing every other one leaves 128 MiB of
    # holes that glibc keeps for reuse instead of returning, as it does with a training step's activations
    blocks = [np.ones(8192) for _ in range(4096)]
    del blocks[::2]
    held = process.memory_info().rss
    if not release_freed_memory():
        pytest.skip("this C library has no malloc_trim")
    released = held - process.memory_info().rss
    assert released > 64 * 2**20, f"only {released / 2**20:.0f} MiB released"
    assert all(block[-1] == 1.0 for block in blocks)  # what is still in use is untouched
