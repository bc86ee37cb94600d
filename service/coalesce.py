"""Coalescing: concurrent calls of one kind answered by one round trip.

Calls made in the same event-loop iteration go out together at the end of
it; while `max_inflight` round trips are out, new calls queue, and all of
them go in the next one. An idle server therefore sends a lone call at once
(one loop iteration later), and a busy one pays one round trip, one system
call each way, for many callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

# Pages (lists) of up to MAX_COALESCED_PAGE items are coalesced, at most this many
# in one query: a round trip's rows are parsed in one go, holding the event
# loop meanwhile, so a batch of large pages would stall every other request.
MAX_COALESCED_PAGE = 100
MAX_PAGES_PER_QUERY = 64

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """`fetch(items)` answers a list of items with a list of results, in order.

    If it raises, every caller of that round trip gets the exception. A caller
    that is cancelled simply stops waiting; its item may still be sent.
    """

    def __init__(
        self,
        fetch: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_size: int = 256,
        max_inflight: int = 2,
    ) -> None:
        self._fetch = fetch
        self.max_size = max_size
        self.max_inflight = max_inflight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        self.calls = 0

    async def call(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._pending and self._inflight < self.max_inflight:
            self._scheduled = True
            loop.call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        if not self._pending or self._inflight >= self.max_inflight:
            return
        batch, self._pending = self._pending[: self.max_size], self._pending[self.max_size :]
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._round_trip(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._schedule(asyncio.get_running_loop())  # more than max_size were waiting

    async def _round_trip(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._fetch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} calls")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            self.round_trips += 1
            self.calls += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._inflight -= 1
            self._schedule(asyncio.get_running_loop())
