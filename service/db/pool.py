"""The PostgreSQL connection pool and the outage bookkeeping around it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from service.db.json import decode_with_msgspec

log = logging.getLogger("tally.db")

# Errors that roll a transaction back whole, so running it again is safe.
RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


Key = TypeVar("Key")
Row = TypeVar("Row")

# Coalesced reads keep up to this many connections out of the pool between
# round trips (see Database.batch_query), each for at most this long.
KEPT_READERS = 2
KEEP_SECONDS = 60.0


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached (or timed out); the caller should answer 503."""


class Database:
    """An async pool that turns connection failures into `DatabaseUnavailable`.

    An outage is logged once when it starts and once when it ends, not on
    every request that runs into it.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 2.0,
        statement_timeout_ms: int = 5000,
    ) -> None:
        connect_timeout = max(1, int(timeout))
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            name="tally",
            kwargs={
                "autocommit": True,
                "connect_timeout": connect_timeout,
                # random_page_cost 1.1 (the usual value for SSDs and a cached
                # working set): the batch statements join a short key list
                # against accounts, transfers and keys, and with the default 4
                # PostgreSQL read every account (a sequential scan) to lock 120.
                "options": f"-c statement_timeout={statement_timeout_ms} -c random_page_cost=1.1",
                "application_name": "tally",
            },
            # Give up a background reconnect quickly: the next request then
            # starts a fresh attempt at once, instead of waiting out an
            # exponential backoff that grows to minutes during a long outage.
            reconnect_timeout=max(2.0, timeout),
            configure=decode_with_msgspec,
        )
        self.down = False
        # While an outage is known, a request waits only this long for a
        # connection: it answers 503 at once instead of after the full
        # timeout, and requests queued behind it (group commit) do not add
        # up their waits. A reconnected pool serves within this wait.
        self.outage_timeout = min(timeout, 0.25)
        # Idle connections kept for coalesced reads, the most recently used
        # last, each with the time it was first kept.
        self._readers: list[tuple[psycopg.AsyncConnection, float]] = []

    async def open(self) -> None:
        # Do not wait: the service starts (and answers 503) even if the
        # database is still down; the pool fills in the background.
        await self.pool.open(wait=False)

    async def close(self) -> None:
        readers, self._readers = self._readers, []
        for conn, _ in readers:
            await self.pool.putconn(conn)
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            timeout = self.outage_timeout if self.down else None
            async with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        self._reachable()

    def _unavailable(self, exc: Exception) -> Exception:
        """What to raise for a failure to reach PostgreSQL or run a statement in time."""
        if isinstance(exc, RETRYABLE):
            return exc  # deadlock or serialization failure: the caller may retry
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return DatabaseUnavailable("statement timeout")
        if not self.down:
            self.down = True
            log.error("database unavailable: %s", exc)
        return DatabaseUnavailable(str(exc))

    def _reachable(self) -> None:
        if self.down:
            self.down = False
            log.warning("database reachable again")

    def batch_query(
        self, query: Callable[[psycopg.AsyncConnection, list[Key]], Awaitable[list[Row]]]
    ) -> Callable[[list[Key]], Awaitable[list[Row]]]:
        """`query(conn, keys)`: the flush of a coalesced read (service.coalesce),
        one query for the keys asked for meanwhile.

        It runs on a connection kept out of the pool for these reads, the most
        recently used first: the same one or two PostgreSQL backends then serve
        every read, with their caches warm, where the pool hands out its
        connections in turn; and the pool's own bookkeeping is skipped. In
        alternating `python -m benchmarks.http.cpu` runs this took a `GET
        /api/accounts/{id}` from 101-102 to 92-94 us of the machine. A failed
        connection goes back to the pool, which replaces it; a kept one goes
        back after KEEP_SECONDS, so that the pool can still retire it."""

        async def run(keys: list[Key]) -> list[Row]:
            conn, kept_since = await self._reader()
            try:
                rows = await query(conn, keys)
            except BaseException as exc:
                await self.pool.putconn(conn)
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    raise self._unavailable(exc) from exc
                raise
            self._reachable()
            if len(self._readers) < KEPT_READERS and time.monotonic() - kept_since < KEEP_SECONDS:
                self._readers.append((conn, kept_since))
            else:
                await self.pool.putconn(conn)
            return rows

        return run

    async def _reader(self) -> tuple[psycopg.AsyncConnection, float]:
        if self._readers:
            return self._readers.pop()
        try:
            conn = await self.pool.getconn(timeout=self.outage_timeout if self.down else None)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        return conn, time.monotonic()
