"""The pool wrapper: outages become DatabaseUnavailable, logged once, and fail fast."""

from __future__ import annotations

import asyncio
import socket

import psycopg
import pytest

from service.db import pool
from service.db.pool import Database, DatabaseUnavailable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_during_a_known_outage_requests_wait_only_briefly(monkeypatch, caplog):
    db = Database(f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", min_size=1, timeout=2.0)
    waits: list[float | None] = []
    real = db.pool.connection

    def spy(timeout: float | None = None):
        waits.append(timeout)
        return real(timeout=timeout)

    monkeypatch.setattr(db.pool, "connection", spy)
    await db.open()
    try:
        for _ in range(3):
            with pytest.raises(DatabaseUnavailable):
                async with db.connection():
                    pass
    finally:
        await db.close()
    # The first request finds the outage with the full timeout; the next ones
    # use the short one instead of queueing up full timeouts.
    assert waits == [None, db.outage_timeout, db.outage_timeout]
    assert db.outage_timeout < 2.0
    assert sum("database unavailable" in r.getMessage() for r in caplog.records) == 1


async def test_the_full_timeout_is_back_once_the_database_answers(database_url):
    db = Database(database_url, min_size=1, timeout=2.0)
    await db.open()
    try:
        db.down = True  # as after an outage
        async with db.connection() as conn:
            await conn.execute("SELECT 1")
        assert db.down is False
    finally:
        await db.close()


async def _backend(conn, keys):
    cur = await conn.execute("SELECT pg_backend_pid()")
    return [(await cur.fetchone())[0]] * len(keys)


async def test_coalesced_reads_keep_their_connection(database_url):
    db = Database(database_url, min_size=3, max_size=4)
    await db.open()
    await db.pool.wait()
    read = db.batch_query(_backend)
    try:
        pids = {(await read([1]))[0] for _ in range(6)}
        # Kept between round trips: one backend serves them all, where the
        # pool would hand out its three connections in turn.
        assert len(pids) == 1
        assert len(db._readers) == 1
    finally:
        await db.close()
    assert db._readers == []
    assert db.pool.closed


async def test_concurrent_reads_keep_at_most_a_few_connections(database_url):
    db = Database(database_url, min_size=1, max_size=8)
    await db.open()
    read = db.batch_query(_backend)

    async def slow(conn, keys):
        await conn.execute("SELECT pg_sleep(0.05)")
        return keys

    slow_read = db.batch_query(slow)
    try:
        await asyncio.gather(*(slow_read([n]) for n in range(5)))
        assert len(db._readers) == pool.KEPT_READERS
        assert len({(await read([1]))[0] for _ in range(3)}) == 1
    finally:
        await db.close()


async def test_a_failed_read_gives_its_connection_back(database_url):
    db = Database(database_url, min_size=1, max_size=2)
    await db.open()

    async def broken(conn, keys):
        await conn.execute("SELECT no_such_column")
        return keys

    async def lost(conn, keys):
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return keys

    try:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            await db.batch_query(broken)([1])
        assert db._readers == []
        with pytest.raises(DatabaseUnavailable):
            await db.batch_query(lost)([1])
        assert db._readers == [] and db.down
        assert await db.batch_query(_backend)([1])  # a fresh connection from the pool
        assert not db.down
    finally:
        await db.close()


async def test_a_kept_connection_goes_back_after_a_while(database_url, monkeypatch):
    db = Database(database_url, min_size=1, max_size=2)
    await db.open()
    read = db.batch_query(_backend)
    try:
        await read([1])
        assert len(db._readers) == 1
        monkeypatch.setattr(pool, "KEEP_SECONDS", 0.0)
        await read([1])
        assert db._readers == []
    finally:
        await db.close()
