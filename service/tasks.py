"""Stopping background tasks reliably.

On Python 3.11, `asyncio.wait_for` returns normally, and the cancellation is
lost, when the task is cancelled in the same loop iteration as the awaited
thing completes (CPython gh-86296; rewritten in 3.12). psycopg-pool waits
for a connection with `wait_for`, so a background loop cancelled while it
gets a connection could carry on forever and a shutdown that awaited it
would hang. The loops therefore check `cancelling()` themselves, and
`cancel_and_wait` repeats the cancellation until the task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("tally.tasks")


def cancel_requested() -> bool:
    """True when the current task was asked to stop (even if the request was swallowed)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(
    task: asyncio.Task[Any], timeout: float = 10.0, repeat_every: float = 1.0
) -> None:
    """Cancel `task` and wait until it has ended (or `timeout` passes, logged).

    The cancellation is repeated every `repeat_every` seconds while the task
    runs, long enough for a task's own clean-up (a last flush) to finish.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("background task %s did not stop within %.0f s", task.get_name(), timeout)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(repeat_every, remaining))
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed", task.get_name(), exc_info=exc)
