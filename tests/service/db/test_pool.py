"""The pool wrapper: outages become DatabaseUnavailable, logged once, and fail fast."""

from __future__ import annotations

import socket

import pytest

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
