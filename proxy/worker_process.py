"""What a server worker tunes about its own process: the allocator and the collector.

Only ``kairos serve`` workers do this (``app_from_environment``); an app built in-process,
as the tests build them, leaves its host process alone.

Measured with bench/personalised.py's memory run (1 worker, 50 connections filling a 64 MB
page cache with the 40 corpus pages): peak RSS 234 MB with glibc's defaults, 201 MB with
these allocator settings; a full collection took 20-40 ms and came every few thousand
requests, which is where the p99 spikes of 40-80 ms at concurrency 1 came from.

Free memory is also handed back after bursts (:class:`FreeMemoryReleaser`): glibc returns
only the free space at the top of its heap, and one long-lived allocation above a burst's
freed buffers keeps them all resident. Measured in process (1 MB pages, 50 concurrent
views, then the corpus filling the 64 MB cache): 61 MB of the heap was free but resident
after the 1 MB burst, and later large allocations (cached pages) were placed in it, so the
worker never came back down; bench/personalised.py's full matrix ended its 1 MB cells with
154-170 MB RSS per worker and peaked at 156-165 MB private in the memory run after them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading

log = logging.getLogger("kairos")

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Page bodies are 10 KB - 2 MB. Allocated above this size they are mapped, and unmapped when
# freed, so a page that leaves the cache gives its memory back. glibc's default starts at
# 128 KB but raises the threshold with every large free, up to 32 MB, after which such
# buffers come from the heap and fragment it.
MMAP_THRESHOLD = 128 * 1024


# Free bytes in malloc's heaps beyond what was last handed back before releasing again.
# Steady corpus traffic leaves 3-15 MB free (small holes that cannot be handed back anyway);
# a burst of large pages leaves tens of MB.
RELEASE_AT = 16 * 1024 * 1024
RELEASE_EVERY = 1.0   # seconds between looks at the heap (mallinfo2: ~0.1 ms)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_allocator(release_every: float | None = RELEASE_EVERY) -> bool:
    """Fixed mmap and trim thresholds, and two malloc arenas (glibc otherwise gives every
    thread its own, each keeping what it freed). Before any other thread starts. Then starts
    the :class:`FreeMemoryReleaser` (once per process; ``release_every`` None: not).
    False where the C library is not glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD),
        (_M_ARENA_MAX, 2)))
    if not ok:
        log.debug("mallopt refused a setting; the allocator keeps its defaults")
    if release_every is not None:
        FreeMemoryReleaser.start_once(release_every)
    return ok


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


class FreeMemoryReleaser:
    """Hands free heap memory back to the kernel (``malloc_trim``) once a burst has left
    :data:`RELEASE_AT` more of it than at the last release.

    A daemon thread: ctypes calls drop the GIL, so the event loop keeps running while a
    release walks the heap (~8 ms for an 80 MB heap; only the loop's own malloc calls wait
    for it meanwhile). Releasing on a timer whatever the heap holds (tried: every second)
    costs that walk every second and changes nothing in steady traffic, where the free
    space is small holes between live pages; so a release happens only after a burst.
    Pages handed back are faulted in again when reused, which is the price of getting them
    back at all."""

    _started: FreeMemoryReleaser | None = None
    _lock = threading.Lock()

    def __init__(self, libc: ctypes.CDLL, every: float, release_at: int = RELEASE_AT) -> None:
        self.every = every
        self.release_at = release_at
        self._mallinfo2 = libc.mallinfo2
        self._mallinfo2.restype = _MallInfo2
        self._trim = libc.malloc_trim
        self._trim.argtypes = [ctypes.c_size_t]
        self.baseline = 0   # free bytes after the last release (or the fewest seen since)
        self.releases = 0
        self._stop = threading.Event()

    @classmethod
    def start_once(cls, every: float) -> FreeMemoryReleaser | None:
        """The process's releaser, started on first call; None without glibc 2.33+."""
        with cls._lock:
            if cls._started is None:
                libc = _libc()
                if libc is None or not hasattr(libc, "mallinfo2"):
                    return None
                cls._started = cls(libc, every)
                threading.Thread(target=cls._started.run, name="kairos-free-memory",
                                 daemon=True).start()
            return cls._started

    def free_bytes(self) -> int:
        return int(self._mallinfo2().fordblks)

    def check(self) -> bool:
        """One look at the heap; True if memory was handed back."""
        free = self.free_bytes()
        if free < self.baseline:   # reused since: those pages are resident again
            self.baseline = free
        if free - self.baseline < self.release_at:
            return False
        self._trim(0)
        self.baseline = free
        self.releases += 1
        return True

    def run(self) -> None:
        while not self._stop.wait(self.every):
            self.check()

    def stop(self) -> None:
        self._stop.set()


def freeze_startup_objects() -> int:
    """Everything loaded so far (modules, rules, the geo reader) lives as long as the
    worker. Left to the collector, every full collection walks it all again; frozen, it is
    skipped. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
