"""The per-worker background loops (signals, bandit weights, cache purges): one way to run
them, so each fails alone and every one stops at shutdown.

redis-py may turn a task's cancellation into its own connection error (then
``StoreUnavailable``); a loop that only caught ``CancelledError`` would log it and go on,
holding up the shutdown. So a loop also ends when its task is being cancelled, whatever the
step raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .store.client import StoreUnavailable, being_cancelled


async def every(interval: float, step: Callable[[], Awaitable[object]], what: str,
                log: logging.Logger) -> None:
    """``step()`` every ``interval`` seconds until cancelled. Redis away is logged at debug
    level (the step keeps its last good state); any other failure with its traceback."""
    while True:
        try:
            await step()
        except StoreUnavailable as exc:
            if being_cancelled():
                return
            log.debug("%s: %s; keeping the last good state", what, exc)
        except Exception:
            if being_cancelled():
                return
            log.exception("%s failed; keeping the last good state and going on", what)
        if being_cancelled():
            return
        await asyncio.sleep(interval)
