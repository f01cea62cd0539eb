"""Giving memory back after a telemetry backlog drains, and sizing what a batch holds.

CPython returns freed objects to its own allocator and glibc's ``malloc`` keeps freed pages of
its arenas mapped, so a worker that once held a 200 MB backlog of request bodies stays at that
RSS after delivering it. :class:`MemoryTrimmer` runs a full collection and glibc's
``malloc_trim(0)`` (which hands free pages back to the kernel) when the queued bytes fall back
to zero after a large peak, at most once per ``min_interval_s``. On a libc without
``malloc_trim`` (musl, macOS) only the collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

from gateway.telemetry.wire import SpanBatch

__all__ = ["MemoryTrimmer", "batch_bytes", "malloc_trim"]

log = logging.getLogger("exporter")

SPAN_OVERHEAD_BYTES = 512  # a Span Struct, its ids and a small attribute dict


def batch_bytes(batch: SpanBatch) -> int:
    """Approximate memory a span batch holds: its str/bytes attribute values plus an overhead
    per span (bodies dominate; a body shared by two spans is counted twice, which errs safe)."""
    total = 0
    for span in batch.spans:
        total += SPAN_OVERHEAD_BYTES
        for value in span.attributes.values():
            if isinstance(value, str | bytes):
                total += len(value)
    return total


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _load_malloc_trim()


def malloc_trim() -> bool:
    """``gc.collect()``, then glibc's ``malloc_trim(0)`` if available; True if trimmed."""
    gc.collect()
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))


class MemoryTrimmer:
    """Call :meth:`observe` with the bytes queued now; trims when a big backlog has drained."""

    def __init__(self, threshold_bytes: int = 16 * 1024 * 1024, min_interval_s: float = 5.0) -> None:
        self.threshold = threshold_bytes
        self.min_interval_s = min_interval_s
        self._peak = 0
        self._last = -min_interval_s
        self.trims = 0

    def observe(self, queued_bytes: int) -> None:
        """Note the current backlog; trim when it reached zero after a peak over the threshold."""
        if queued_bytes > self._peak:
            self._peak = queued_bytes
            return
        if queued_bytes or self._peak < self.threshold:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval_s:
            return
        self._peak, self._last = 0, now
        self.trims += 1
        malloc_trim()
        log.debug("exporter: backlog drained; memory trimmed")
