"""A server worker tunes its own process (proxy/worker_process.py); see test_cli for the
gauge a served worker reports."""

from __future__ import annotations

import gc
import threading
from types import SimpleNamespace
from typing import Any

from proxy import worker_process


def test_the_allocator_takes_the_settings_on_glibc() -> None:
    """Debian's C library is glibc: every mallopt() call must be accepted."""
    assert worker_process.tune_allocator(release_every=None) is True
    assert worker_process.FreeMemoryReleaser._started is None   # not asked: not started


class _FakeCall:
    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.calls: list[tuple] = []
        self.restype = self.argtypes = None

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.answer() if callable(self.answer) else self.answer


class _FakeLibc:
    """mallinfo2() reports ``free`` bytes free in the heaps; malloc_trim() is recorded."""

    def __init__(self) -> None:
        self.free = 0
        self.mallinfo2 = _FakeCall(lambda: SimpleNamespace(fordblks=self.free))
        self.malloc_trim = _FakeCall(1)


def test_free_memory_is_handed_back_only_after_a_burst() -> None:
    libc = _FakeLibc()
    releaser = worker_process.FreeMemoryReleaser(libc, every=1.0, release_at=100)  # type: ignore[arg-type]
    mb = [(30, False), (99, False), (100, True),   # 100 more than ever handed back: release
          (150, False), (190, False),              # what was handed back does not count twice
          (40, False), (139, False), (140, True)]  # reused meanwhile: counted from the least
    for free, released in mb:
        libc.free = free
        assert releaser.check() is released, free
    assert libc.malloc_trim.calls == [(0,), (0,)] and releaser.releases == 2


def test_the_releaser_starts_once_per_process_and_stops() -> None:
    started = worker_process.FreeMemoryReleaser.start_once(60.0)
    try:
        assert started is not None and started.every == 60.0
        assert worker_process.FreeMemoryReleaser.start_once(1.0) is started
        assert any(t.name == "kairos-free-memory" and t.daemon for t in threading.enumerate())
        assert started.free_bytes() > 0   # the real mallinfo2 of this process
    finally:
        if started is not None:
            started.stop()
        worker_process.FreeMemoryReleaser._started = None


def test_startup_objects_are_frozen_out_of_the_collectors_way() -> None:
    try:
        frozen = worker_process.freeze_startup_objects()
        # (a frozen object that dies leaves the frozen set, so the count may drop a little)
        assert frozen > 1000 and gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()   # this test process is not a worker
    assert gc.get_freeze_count() == 0
