"""Group commit: concurrent requests coalesced into one database transaction.

While a batch is being committed, new requests queue up; when the commit
finishes, everything queued (up to a bound) goes into the next batch. An idle
server therefore commits a lone request at once, and a busy one amortises each
commit over many requests. Each caller gets its own result only after the
commit of the batch that holds its request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from service import metrics

Req = TypeVar("Req")
Res = TypeVar("Res")

log = logging.getLogger("tally.batcher")


class GroupCommit(Generic[Req, Res]):
    """Feeds queued requests to `flush` in batches of at most `max_size` units.

    `size(request)` says how many units a request weighs (e.g. its transfers);
    a request heavier than `max_size` still goes, alone. At most `max_inflight`
    batches are flushed at once. `flush` returns one result per request, or
    raises, which fails every request of that batch.
    """

    def __init__(
        self,
        flush: Callable[[list[Req]], Awaitable[list[Res]]],
        *,
        max_size: int = 512,
        max_inflight: int = 1,
        size: Callable[[Req], int] = lambda _: 1,
    ) -> None:
        self._flush = flush
        self._size = size
        self.max_size = max_size
        # (request, its future, when it was queued)
        self._queue: deque[tuple[Req, asyncio.Future[Res], float]] = deque()
        self._slots = asyncio.Semaphore(max_inflight)
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.requests = 0
        self.flush_seconds = 0.0

    async def submit(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future, time.perf_counter()))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # Shielded: a caller that goes away does not cancel the batch; its
        # request is still applied (or not) with the others.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._queue:
            await self._slots.acquire()
            batch = self._take()
            task = asyncio.create_task(self._commit(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # Let the batch start (and more requests arrive) before taking more.
            await asyncio.sleep(0)

    def _take(self) -> list[tuple[Req, asyncio.Future[Res], float]]:
        batch = [self._queue.popleft()]
        weight = self._size(batch[0][0])
        while self._queue and weight + self._size(self._queue[0][0]) <= self.max_size:
            item = self._queue.popleft()
            weight += self._size(item[0])
            batch.append(item)
        return batch

    async def _commit(self, batch: list[tuple[Req, asyncio.Future[Res], float]]) -> None:
        started = time.perf_counter()
        try:
            results = await self._flush([request for request, _, _ in batch])
        except BaseException as exc:
            metrics.observe_group_commit(len(batch), [], 0.0, ok=False)
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.batches += 1
            self.requests += len(batch)
            flushed = time.perf_counter() - started
            self.flush_seconds += flushed
            waits = [started - queued for _, _, queued in batch]
            metrics.observe_group_commit(len(batch), waits, flushed, ok=True)
            for (_, future, _), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                # A flush may fail single requests of a batch by returning
                # their exception in place of their result.
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._slots.release()

    def stats(self) -> str:
        if not self.batches:
            return "no batches"
        return (
            f"{self.batches} batches, {self.requests / self.batches:.1f} requests each,"
            f" {self.flush_seconds / self.batches * 1000:.2f} ms each"
        )

    async def drain(self) -> None:
        """Wait until every queued request has been committed (for shutdown)."""
        while self._queue or self._tasks or (self._runner and not self._runner.done()):
            await asyncio.sleep(0.01)
