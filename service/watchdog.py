"""Deadlines on awaits, checked by one sweep per event loop instead of a timer each.

`asyncio.timeout` arms a timer per await: under uvloop, arming and cancelling
one costs about 4 µs, and the whole context manager 8 µs, on every request
body read. Here an await registers its task and deadline in a dict (well
under a microsecond), and one sweeper task per loop cancels, every
`RESOLUTION` seconds, the tasks whose deadline has passed: a deadline fires
up to `RESOLUTION` late, which is fine for deadlines of seconds. The sweeper
runs only while something is waiting, so an idle loop (or a test's
short-lived one) has none left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

RESOLUTION = 0.25


class Expired(Exception):
    """The await outlived its deadline and was cancelled."""


class _Sweeper:
    __slots__ = ("expired", "running", "waiting")

    def __init__(self) -> None:
        self.waiting: dict[asyncio.Task[object], float] = {}
        self.expired: set[asyncio.Task[object]] = set()
        self.running = False

    async def sweep(self) -> None:
        try:
            while self.waiting:
                await asyncio.sleep(RESOLUTION)
                now = time.monotonic()
                for task, deadline in list(self.waiting.items()):
                    if deadline <= now and task not in self.expired:
                        self.expired.add(task)
                        task.cancel()
        finally:
            self.running = False


_sweepers: dict[asyncio.AbstractEventLoop, _Sweeper] = {}


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sweeper = _sweepers.get(loop)
    if sweeper is None:
        for old in [old for old in _sweepers if old.is_closed()]:
            del _sweepers[old]
        sweeper = _sweepers[loop] = _Sweeper()
    return sweeper


async def wait_until(deadline: float, awaitable: Awaitable[T]) -> T:
    """`await awaitable`, or raise Expired once `time.monotonic()` passes
    `deadline` (up to RESOLUTION later). Must run in a task."""
    task = asyncio.current_task()
    assert task is not None
    loop = task.get_loop()
    sweeper = _sweeper(loop)
    sweeper.waiting[task] = deadline
    if not sweeper.running:
        sweeper.running = True
        loop.create_task(sweeper.sweep())
    try:
        return await awaitable
    except asyncio.CancelledError:
        if task not in sweeper.expired:
            raise
        if task.uncancel() > 0:  # cancelled by someone else too: theirs wins
            raise
        raise Expired from None
    finally:
        del sweeper.waiting[task]
        sweeper.expired.discard(task)
