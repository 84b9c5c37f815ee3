"""Freed heap memory handed back to the operating system before a large allocation.

glibc's malloc keeps what a process frees for reuse, in the arenas of the threads that freed it. After training
steps that is most of the last steps' activations: MRSE, 6 steps on 120,000 ESCI-shaped products, RSS 3.24 GiB,
1.62 GiB after ``malloc_trim(0)`` (0.13 s). The catalogue encoding of a validation check that follows allocates
other, larger blocks and does not reuse it, so at ESCI's 1.2M products its 1.1 GiB (the catalogue vectors and
faiss's copy) stacked on what training had left held: peak 7.89 GiB against 7.18 during training. Releasing is
result-neutral: only memory already freed goes back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS; False where that is not possible (nothing happens then)."""
    trim = _libc_trim()
    if trim is None:
        return False
    trim(0)
    return True
