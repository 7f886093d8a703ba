"""Give the heap that a burst of work freed back to the operating system.

glibc's malloc keeps freed memory in its heap for reuse, and returns it only when the top of the
heap is free: after a burst (a thousand pods created, a relist) the live objects are scattered
and most of the freed megabytes stay in the process's RSS for good. Measured under S1 of
`make bench-scale`: RSS +19 MiB over the idle process after the burst, +7 MiB once
`malloc_trim(0)` returned what was free. Go's runtime does the same on its own (its scavenger
returns free pages in the background), so a Go controller's RSS falls back after a burst and
ours stayed up.

`HeapTrimmer` looks once a second and trims when the work has paused (no key added to any work
queue since the last look: trimming in the middle of a rollout would hand back pages the next
second takes again, and `malloc_trim` walks every free chunk) and the allocator's own accounting
(`mallinfo2`, cheap) shows a free heap over both a floor and a share of the heap in use. Without
glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controller.runtime.logging import get_logger

log = get_logger(__name__)

MIB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    # glibc >= 2.33; every field is a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@dataclass(frozen=True, slots=True)
class HeapUsage:
    in_use: int  # bytes handed out by malloc (uordblks)
    free: int  # bytes free inside the heap, held by the process (fordblks)


class Allocator(Protocol):
    def usage(self) -> HeapUsage: ...

    def trim(self) -> None: ...


class GlibcAllocator:
    def __init__(self, libc: ctypes.CDLL) -> None:
        self._mallinfo2 = libc.mallinfo2
        self._mallinfo2.restype = _MallInfo2
        self._mallinfo2.argtypes = []
        self._malloc_trim = libc.malloc_trim
        self._malloc_trim.restype = ctypes.c_int
        self._malloc_trim.argtypes = [ctypes.c_size_t]

    def usage(self) -> HeapUsage:
        info = self._mallinfo2()
        return HeapUsage(in_use=int(info.uordblks), free=int(info.fordblks))

    def trim(self) -> None:
        self._malloc_trim(0)


def glibc_allocator() -> Allocator | None:
    """The process's glibc malloc, or None when the C library is not glibc >= 2.33."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return GlibcAllocator(ctypes.CDLL(name))
    except (OSError, AttributeError):
        return None


def should_trim(usage: HeapUsage, *, min_free: int, free_share: float) -> bool:
    return usage.free > max(min_free, free_share * usage.in_use)


class HeapTrimmer:
    def __init__(
        self,
        allocator: Allocator | None,
        *,
        activity: Callable[[], int] | None = None,
        interval: float = 1.0,
        min_free: int = 4 * MIB,
        free_share: float = 0.10,
    ) -> None:
        self.allocator = allocator
        # A count that grows while the process works (keys added to the work queues).
        self.activity = activity
        self._last_activity: int | None = None
        self.interval = interval
        self.min_free = min_free
        self.free_share = free_share
        self.trims = 0

    def check(self) -> bool:
        """Trims if the work paused since the last check and enough of the heap is free; True if
        it did."""
        if self.allocator is None:
            return False
        if self.activity is not None:
            current = self.activity()
            busy = current != self._last_activity
            self._last_activity = current
            if busy:
                return False
        usage = self.allocator.usage()
        if not should_trim(usage, min_free=self.min_free, free_share=self.free_share):
            return False
        self.allocator.trim()
        self.trims += 1
        # No second mallinfo2 for the log: trimmed pages stay counted as free heap (madvise).
        log.debug("heap trimmed", free=usage.free, in_use=usage.in_use)
        return True

    async def run(self) -> None:
        """Until cancelled."""
        if self.allocator is None:
            log.debug("no glibc malloc: the heap is left to the allocator")
            return
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:
                # Never worth failing the controller for: say it once and leave the heap be.
                log.exception("heap trimming failed; not trying again")
                return
