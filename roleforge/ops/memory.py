"""The C allocator's settings (glibc): memory a hot loop frees kept in the heap for its next round, and handed
back to the system between measurements."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
LARGEST_MMAP_THRESHOLD = 32 * 2**20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit systems


@functools.cache  # trim_heap runs after every batch of generation: the library is looked up once
def glibc() -> Any:
    """The process's C library when it is glibc (the allocator heap_kept tunes), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


@contextmanager
def heap_kept() -> Iterator[None]:
    """Keep the memory a training step frees in the heap, for the next step. By default glibc hands buffers above a
    threshold (128 KiB, raised as large ones are freed, to at most 32 MiB) to mmap and returns the heap's free top to
    the system past twice that, so each step's activations were faulted in, zeroed by the kernel, afresh (page
    faults and system CPU: docs/perf-notes.md). Inside, every buffer up to 32 MiB comes from
    the heap and the heap is not trimmed. On leaving, glibc gets the thresholds its own adjustment reaches in a
    process that has freed 32 MiB buffers (any training has), and the free memory is handed back."""
    libc = glibc()
    if libc is None:
        yield
        return
    libc.malloc_trim(0)  # what was freed before is not kept: only what the loop itself frees
    libc.mallopt(M_MMAP_THRESHOLD, LARGEST_MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, 2 * LARGEST_MMAP_THRESHOLD)
        libc.malloc_trim(0)


# heap_kept's settings for a whole process, as glibc reads them from its environment at start (ingest's parse
# workers): a worker's freed memory stays its own, to be reused, until it exits. Other C libraries ignore them.
HEAP_KEPT_ENVIRONMENT = {"MALLOC_TRIM_THRESHOLD_": str(2**32), "MALLOC_MMAP_THRESHOLD_": str(LARGEST_MMAP_THRESHOLD)}


def trim_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim: milliseconds for a heap of gigabytes)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def release_memory() -> None:
    """Hand freed memory back to the system, so that one measurement's peak does not count against the next."""
    import gc

    gc.collect()
    trim_heap()
