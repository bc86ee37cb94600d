"""Account pages of transfers coalesced into one query: each caller gets exactly the
page a query of its own (service.db.transfers.page) returns."""

from __future__ import annotations

import asyncio
import uuid

from service.coalesce import MAX_COALESCED_PAGE
from service.db import transfers as sql
from service.ledger import transfers as ledger
from tests.service.api.helpers import open_account
from tests.service.api.test_transfers import funded, moved
from tests.service.ledger.trips import round_trips

NO_FILTER = {"status": None, "created_from": None, "created_to": None}


async def test_concurrent_pages_share_one_query_and_match_a_query_of_their_own(
    app, client, tenant, other_tenant
):
    w, a, b = await funded(client, tenant)
    c = await open_account(client, tenant, name="C")
    made = [(await moved(client, tenant, a, b if i % 2 else c, 1))["id"] for i in range(7)]
    _ow, oa, _ob = await funded(client, other_tenant)
    ids = {name: uuid.UUID(v) for name, v in {"w": w, "a": a, "b": b, "c": c, "oa": oa}.items()}
    cursor = uuid.UUID(made[4])
    asks = [
        (tenant.tenant_id, ids["a"], 3, None),
        (tenant.tenant_id, ids["a"], 100, None),  # every transfer of a, the funding one too
        (tenant.tenant_id, ids["a"], 2, cursor),  # below a cursor
        (tenant.tenant_id, ids["b"], 100, None),  # b is only ever credited
        (tenant.tenant_id, ids["c"], 1, cursor),
        (tenant.tenant_id, ids["w"], 5, None),
        (tenant.tenant_id, ids["oa"], 100, None),  # another tenant's account: nothing
        (other_tenant.tenant_id, ids["oa"], 100, None),
        (tenant.tenant_id, uuid.uuid4(), 100, None),  # no such account
    ]
    reader = app.state.transfer_reader
    with round_trips(reader.pages, 1):
        pages = await asyncio.gather(*(reader.pages.call(ask) for ask in asks))
    async with app.state.db.connection() as conn:
        for (tenant_id, account_id, limit, before), page in zip(asks, pages, strict=True):
            alone = await sql.page(
                conn, tenant_id, limit=limit, before=before, account_id=account_id, **NO_FILTER
            )
            assert page == alone, (account_id, limit, before)
    assert [len(p) for p in pages] == [3, 8, 2, 3, 1, 1, 0, 1, 0]


async def test_listing_by_account_alone_is_coalesced_and_other_filters_are_not(app, client, tenant):
    _w, a, b = await funded(client, tenant)
    await moved(client, tenant, a, b, 1)
    reader = app.state.transfer_reader
    with round_trips(reader.pages, 1):
        rows, more = await ledger.list_transfers(
            reader, tenant.tenant_id, limit=1, before=None, account_id=uuid.UUID(a), **NO_FILTER
        )
    assert len(rows) == 1 and more is True
    with round_trips(reader.pages, 0):
        rows, more = await ledger.list_transfers(
            reader,
            tenant.tenant_id,
            limit=5,
            before=None,
            account_id=uuid.UUID(a),
            **{**NO_FILTER, "status": "posted"},
        )
    assert len(rows) == 2 and more is False
    # A large page is read alone: a round trip's rows are parsed in one go.
    with round_trips(reader.pages, 0):
        rows, more = await ledger.list_transfers(
            reader, tenant.tenant_id, limit=MAX_COALESCED_PAGE + 1, before=None,
            account_id=uuid.UUID(a), **NO_FILTER,
        )  # fmt: skip
    assert len(rows) == 2 and more is False


async def test_concurrent_reads_by_id_share_one_query_and_keep_tenants_apart(
    app, client, tenant, other_tenant
):
    _w, a, b = await funded(client, tenant)
    mine = [uuid.UUID((await moved(client, tenant, a, b, i + 1))["id"]) for i in range(3)]
    ow, oa, _ob = await funded(client, other_tenant)
    theirs = uuid.UUID((await moved(client, other_tenant, oa, ow, 1))["id"])
    asks = [
        *((tenant.tenant_id, t) for t in mine),
        (tenant.tenant_id, mine[0]),  # the same transfer twice
        (other_tenant.tenant_id, theirs),
        (tenant.tenant_id, theirs),  # another tenant's transfer: none
        (tenant.tenant_id, uuid.uuid4()),  # no such transfer
    ]
    reader = app.state.transfer_reader
    with round_trips(reader.reads, 1):
        rows = await asyncio.gather(*(ledger.get_transfer(reader, t, i) for t, i in asks))
    assert [None if r is None else r[0] for r in rows] == [*mine, mine[0], theirs, None, None]
    assert rows[0][1:3] == (uuid.UUID(a), uuid.UUID(b)) and rows[0][3] == 1
