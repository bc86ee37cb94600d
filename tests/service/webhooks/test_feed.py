"""GET /api/events: commit order, resumable with `after`, nothing missed or repeated,
even with writers running (and rolling back) while a reader follows the feed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from service.db import events as events_sql
from tests.conftest import Tenant
from tests.service.api.helpers import assert_error, field_names, open_account

FEED = "/api/events"


async def feed(
    client: httpx.AsyncClient, tenant: Tenant, **query: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    r = await client.get(FEED, params=query, headers=tenant.headers("events:read"))
    assert r.status_code == 200, r.text
    body = r.json()
    return body["data"], body["meta"]


async def follow(client: httpx.AsyncClient, tenant: Tenant, after: int = 0) -> list[int]:
    """Read the whole feed from `after`, page by page, as a client resuming would."""
    seen: list[int] = []
    while True:
        data, meta = await feed(client, tenant, after=after, limit=7)
        seen += [e["sequence"] for e in data]
        after = int(meta["next_cursor"])
        if not meta["has_more"]:
            return seen


async def test_feed_lists_events_in_order_and_resumes_from_next_cursor(client, tenant):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    body = {"debit_account_id": source, "credit_account_id": sink, "amount": 5, "currency": "USD"}
    r = await client.post("/api/transfers", json=body, headers=tenant.headers())
    assert r.status_code == 201
    data, meta = await feed(client, tenant)
    assert [e["type"] for e in data] == ["account.created", "account.created", "transfer.posted"]
    assert [e["sequence"] for e in data] == [1, 2, 3]
    assert set(data[0]) == {"id", "sequence", "type", "created_at", "data"}
    assert data[0]["data"]["id"] == source and data[2]["data"]["id"] == r.json()["data"]["id"]
    assert meta == {"limit": 50, "has_more": False, "next_cursor": "3"}

    page, meta = await feed(client, tenant, limit=2)
    assert [e["sequence"] for e in page] == [1, 2] and meta["has_more"] is True
    rest, meta = await feed(client, tenant, after=meta["next_cursor"], limit=2)
    assert [e["sequence"] for e in rest] == [3] and meta["has_more"] is False
    # Nothing new: the cursor stays where it is.
    empty, meta = await feed(client, tenant, after=3)
    assert empty == [] and meta["next_cursor"] == "3"


async def test_type_filter(client, tenant):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    body = {"debit_account_id": source, "credit_account_id": sink, "amount": 5, "currency": "USD"}
    await client.post("/api/transfers", json={**body, "pending": True}, headers=tenant.headers())
    data, meta = await feed(client, tenant, type="transfer.pending")
    assert [(e["type"], e["sequence"]) for e in data] == [("transfer.pending", 3)]
    data, _ = await feed(client, tenant, type="account.created", after=1)
    assert [e["sequence"] for e in data] == [2]
    data, meta = await feed(client, tenant, type="transfer.voided")
    assert data == [] and meta["next_cursor"] == "0"


async def test_feed_shows_only_the_tokens_tenant(client, tenant, other_tenant):
    await open_account(client, tenant)
    data, _ = await feed(client, other_tenant)
    assert data == []


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("after", "-1"),
        ("after", "1.5"),
        ("after", "abc"),
        ("after", ""),
        ("after", str(2**63)),
        ("after", "9" * 40),
        ("after", "１２"),  # noqa: RUF001 (full-width digits)
        ("type", "transfer.created"),
        ("type", ""),
        ("limit", "0"),
        ("limit", "1001"),
        ("cursor", "AAAA"),
    ],
)
async def test_bad_parameters_are_400(client, tenant, param: str, value: str):
    r = await client.get(FEED, params={param: value}, headers=tenant.headers())
    assert param in field_names(assert_error(r, 400, "BAD_REQUEST"))


async def test_largest_after_is_served(client, tenant):
    data, meta = await feed(client, tenant, after=2**63 - 1)
    assert data == [] and meta["next_cursor"] == str(2**63 - 1)


async def test_feed_needs_events_read(client, tenant):
    r = await client.get(FEED, headers=tenant.headers("ledger:read"))
    assert_error(r, 403, "FORBIDDEN")


async def test_reader_following_concurrent_writers_misses_nothing_and_sees_nothing_twice(
    client, tenant
):
    accounts = [await open_account(client, tenant, overdraft_limit=None) for _ in range(4)]
    writers_done = asyncio.Event()

    async def write(k: int) -> None:
        for i in range(12):
            body = {
                "debit_account_id": accounts[(k + i) % 4],
                "credit_account_id": accounts[(k + i + 1) % 4],
                "amount": 1,
                "currency": "USD",
            }
            r = await client.post("/api/transfers", json=body, headers=tenant.headers())
            assert r.status_code == 201, r.text

    async def read() -> list[int]:
        seen: list[int] = []
        after = 0
        while True:
            finished = writers_done.is_set()
            data, meta = await feed(client, tenant, after=after, limit=5)
            seen += [e["sequence"] for e in data]
            after = int(meta["next_cursor"])
            if finished and not meta["has_more"]:
                return seen
            await asyncio.sleep(0)

    reader = asyncio.create_task(read())
    await asyncio.gather(*(write(k) for k in range(6)))
    writers_done.set()
    seen = await reader
    total = 4 + 6 * 12
    assert seen == list(range(1, total + 1))
    assert await follow(client, tenant) == seen


async def _blocked_on_a_lock(conn: psycopg.AsyncConnection, pid: int) -> bool:
    cur = await conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    row = await cur.fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.parametrize("first_commits", [False, True], ids=["rolled-back", "committed"])
async def test_a_later_writer_never_overtakes_an_open_one(
    client, app: Starlette, database_url: str, tenant: Tenant, first_commits: bool
):
    """Writer A takes the next sequence and stays open; writer B must wait behind it.
    While A is open the reader sees neither; if A rolls back, B gets A's number
    (no gap), and a reader resuming from its cursor sees B's event either way."""
    await open_account(client, tenant)
    _, meta = await feed(client, tenant)
    cursor = int(meta["next_cursor"])
    async with (
        await psycopg.AsyncConnection.connect(database_url) as a,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watch,
        await psycopg.AsyncConnection.connect(database_url) as b,
    ):
        await events_sql.append(a, tenant.tenant_id, "account.updated", {"writer": "a"})

        async def write_b() -> None:
            await events_sql.append(b, tenant.tenant_id, "account.updated", {"writer": "b"})
            await b.commit()

        second = asyncio.create_task(write_b())
        for _ in range(500):
            if await _blocked_on_a_lock(watch, b.info.backend_pid):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("writer B was never blocked behind writer A")
        data, _ = await feed(client, tenant, after=cursor)
        assert data == []
        await (a.commit() if first_commits else a.rollback())
        await asyncio.wait_for(second, 10)
    data, _ = await feed(client, tenant, after=cursor)
    writers = [e["data"]["writer"] for e in data]
    assert writers == (["a", "b"] if first_commits else ["b"])
    assert [e["sequence"] for e in data] == list(range(cursor + 1, cursor + 1 + len(data)))
