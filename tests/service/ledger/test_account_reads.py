"""Account reads coalesced into one query: each caller still gets exactly its own row."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.ledger import accounts as ledger
from service.ledger.errors import NotFound
from tests.service.api.helpers import ACCOUNTS, open_account
from tests.service.ledger.trips import round_trips


async def test_concurrent_reads_share_one_query_and_keep_tenants_apart(
    app, client, tenant, other_tenant
):
    mine = [uuid.UUID(await open_account(client, tenant, name=f"a{i}")) for i in range(5)]
    theirs = uuid.UUID(await open_account(client, other_tenant, name="b"))
    reader = app.state.accounts
    asks = [
        *((tenant.tenant_id, a) for a in mine),
        (tenant.tenant_id, mine[0]),  # the same account twice
        (other_tenant.tenant_id, theirs),
        (tenant.tenant_id, theirs),  # another tenant's account: not found
        (tenant.tenant_id, uuid.uuid4()),  # no such account
    ]
    with round_trips(reader.reads, 1):
        rows = await asyncio.gather(
            *(ledger.get_account(reader, t, a) for t, a in asks), return_exceptions=True
        )
    for (_, account_id), row in zip(asks[:7], rows[:7], strict=True):
        assert isinstance(row, tuple) and row[0] == account_id
    assert [type(r) for r in rows[7:]] == [NotFound, NotFound]


async def test_concurrent_gets_over_http_each_get_their_own_account(client, tenant, other_tenant):
    mine = [await open_account(client, tenant, name=f"a{i}") for i in range(10)]
    theirs = await open_account(client, other_tenant, name="b")
    replies = await asyncio.gather(
        *(client.get(f"{ACCOUNTS}/{a}", headers=tenant.headers()) for a in [*mine, theirs])
    )
    for account_id, r in zip(mine, replies, strict=False):
        assert r.status_code == 200, r.text
        assert r.json()["data"]["id"] == account_id
    assert replies[-1].status_code == 404


@pytest.mark.parametrize("bad", ["not-a-uuid", "00000000-0000-0000-0000-00000000000g"])
async def test_a_malformed_id_is_refused_before_any_read(client, tenant, app, bad):
    with round_trips(app.state.accounts.reads, 0):
        r = await client.get(f"{ACCOUNTS}/{bad}", headers=tenant.headers())
    assert r.status_code in (400, 404)
