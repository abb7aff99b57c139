"""A server worker tunes its own process (proxy/worker_process.py); see test_cli for the
gauge a served worker reports."""

from __future__ import annotations

import gc

from proxy import worker_process


def test_the_allocator_takes_the_settings_on_glibc() -> None:
    """Debian's C library is glibc: every mallopt() call must be accepted."""
    assert worker_process.tune_allocator() is True


def test_startup_objects_are_frozen_out_of_the_collectors_way() -> None:
    try:
        frozen = worker_process.freeze_startup_objects()
        # (a frozen object that dies leaves the frozen set, so the count may drop a little)
        assert frozen > 1000 and gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()   # this test process is not a worker
    assert gc.get_freeze_count() == 0
