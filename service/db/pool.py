"""The PostgreSQL connection pool and the outage bookkeeping around it."""

from __future__ import annotations

import logging
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

    async def open(self) -> None:
        # Do not wait: the service starts (and answers 503) even if the
        # database is still down; the pool fills in the background.
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            timeout = self.outage_timeout if self.down else None
            async with self.pool.connection(timeout=timeout) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            if isinstance(exc, RETRYABLE):
                raise  # deadlock or serialization failure: the caller may retry
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise DatabaseUnavailable("statement timeout") from exc
            if not self.down:
                self.down = True
                log.error("database unavailable: %s", exc)
            raise DatabaseUnavailable(str(exc)) from exc
        if self.down:
            self.down = False
            log.warning("database reachable again")

    def batch_query(
        self, query: Callable[[psycopg.AsyncConnection, list[Key]], Awaitable[list[Row]]]
    ) -> Callable[[list[Key]], Awaitable[list[Row]]]:
        """`query(conn, keys)` on a pooled connection: the flush of a coalesced read
        (service.coalesce), one query for the keys asked for meanwhile."""

        async def run(keys: list[Key]) -> list[Row]:
            async with self.connection() as conn:
                return await query(conn, keys)

        return run
