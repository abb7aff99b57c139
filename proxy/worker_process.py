"""What a server worker tunes about its own process: the allocator and the collector.

Only ``kairos serve`` workers do this (``app_from_environment``); an app built in-process,
as the tests build them, leaves its host process alone.

Measured with bench/personalised.py's memory run (1 worker, 50 connections filling a 64 MB
page cache with the 40 corpus pages): peak RSS 234 MB with glibc's defaults, 201 MB with
these allocator settings; a full collection took 20-40 ms and came every few thousand
requests, which is where the p99 spikes of 40-80 ms at concurrency 1 came from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

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


def tune_allocator() -> bool:
    """Fixed mmap and trim thresholds, and two malloc arenas (glibc otherwise gives every
    thread its own, each keeping what it freed). Before any thread starts. False where the
    C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD),
        (_M_ARENA_MAX, 2)))
    if not ok:
        log.debug("mallopt refused a setting; the allocator keeps its defaults")
    return ok


def freeze_startup_objects() -> int:
    """Everything loaded so far (modules, rules, the geo reader) lives as long as the
    worker. Left to the collector, every full collection walks it all again; frozen, it is
    skipped. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
