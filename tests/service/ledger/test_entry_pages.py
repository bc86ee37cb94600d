"""Statement pages coalesced into one query, and current balances read through the
coalesced account reads: each caller gets exactly what a query of its own returns."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.coalesce import MAX_COALESCED_PAGE
from service.db import transfers as sql
from service.ledger import statements as ledger
from service.ledger.errors import NotFound
from tests.service.api.helpers import open_account
from tests.service.api.test_transfers import funded, moved, world
from tests.service.ledger.trips import round_trips

NO_TIME = {"created_from": None, "created_to": None}


async def test_concurrent_statement_pages_share_one_query_and_match_a_query_of_their_own(
    app, client, tenant, other_tenant
):
    w, a, b = await funded(client, tenant)
    idle = await open_account(client, tenant, name="idle")
    for i in range(5):
        await moved(client, tenant, a, b, i + 1)
    ow = await world(client, other_tenant)
    ids = {k: uuid.UUID(v) for k, v in {"w": w, "a": a, "b": b, "idle": idle, "ow": ow}.items()}
    async with app.state.db.connection() as conn:
        newest = await sql.entries(
            conn, tenant.tenant_id, ids["a"], limit=3, before=None, **NO_TIME
        )
    cursor = newest[-1][0]
    asks = [
        (tenant.tenant_id, ids["a"], 3, None),
        (tenant.tenant_id, ids["a"], 100, None),  # all six changes of a
        (tenant.tenant_id, ids["a"], 2, cursor),  # below a cursor
        (tenant.tenant_id, ids["b"], 100, None),
        (tenant.tenant_id, ids["w"], 1, None),
        (tenant.tenant_id, ids["idle"], 100, None),  # an account with no entries: []
        (tenant.tenant_id, ids["ow"], 100, None),  # another tenant's account: None
        (other_tenant.tenant_id, ids["ow"], 100, None),  # ... a world account with none yet
        (tenant.tenant_id, uuid.uuid4(), 100, None),  # no such account: None
    ]
    reader = app.state.entry_reader
    with round_trips(reader.pages, 1):
        pages = await asyncio.gather(*(reader.pages.call(ask) for ask in asks))
    async with app.state.db.connection() as conn:
        for (tenant_id, account_id, limit, before), page in zip(asks[:6], pages, strict=False):
            alone = await sql.entries(
                conn, tenant_id, account_id, limit=limit, before=before, **NO_TIME
            )
            assert page == alone, (account_id, limit, before)
    assert [None if p is None else len(p) for p in pages] == [3, 6, 2, 5, 1, 0, None, 0, None]


async def test_statements_by_page_are_coalesced_and_time_filters_are_not(app, client, tenant):
    _w, a, b = await funded(client, tenant)
    await moved(client, tenant, a, b, 1)
    reader = app.state.entry_reader
    with round_trips(reader.pages, 1):
        rows, more = await ledger.entries(
            reader, tenant.tenant_id, uuid.UUID(a), limit=1, before=None, **NO_TIME
        )
    assert len(rows) == 1 and more is True
    with round_trips(reader.pages, 0):
        rows, more = await ledger.entries(
            reader, tenant.tenant_id, uuid.UUID(a), limit=5, before=None,
            created_from=None, created_to=rows[0][-1],
        )  # fmt: skip
    assert len(rows) == 1 and more is False  # the funding entry, before the newest
    with round_trips(reader.pages, 0):
        rows, more = await ledger.entries(
            reader, tenant.tenant_id, uuid.UUID(a), limit=MAX_COALESCED_PAGE + 1, before=None,
            **NO_TIME,
        )  # fmt: skip
    assert len(rows) == 2 and more is False  # a large page is read alone
    with pytest.raises(NotFound):
        await ledger.entries(
            reader, tenant.tenant_id, uuid.uuid4(), limit=1, before=None, **NO_TIME
        )


async def test_current_balances_come_from_the_coalesced_account_reads(app, client, tenant):
    _w, a, b = await funded(client, tenant, amount=700)
    await moved(client, tenant, a, b, 200)
    accounts = app.state.accounts
    with round_trips(accounts.reads, 1):
        got = await asyncio.gather(
            ledger.balance_at(app.state.db, accounts, tenant.tenant_id, uuid.UUID(a), None),
            ledger.balance_at(app.state.db, accounts, tenant.tenant_id, uuid.UUID(b), None),
        )
    assert [g[:3] for g in got] == [(500, 0, 0), (200, 0, 0)]
    with pytest.raises(NotFound):
        await ledger.balance_at(app.state.db, accounts, tenant.tenant_id, uuid.uuid4(), None)
