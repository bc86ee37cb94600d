"""The batch statements find their rows through the primary keys, not by reading tables.

A group-commit batch, and a coalesced read, joins a short list of keys (a
JSON recordset) against accounts. With PostgreSQL's default random_page_cost (4)
the planner read every account to lock a hundred of them; Tally's sessions
set 1.1 (service.db.pool). These tests read the plans (EXPLAIN, nothing is
executed) on 10,000 accounts, the size `make bench` uses: with the default
cost every one of them is a sequential scan (from about 20,000 accounts the
default picks the index too; below a few thousand a scan is cheap anyway).
"""

from __future__ import annotations

import json
import uuid

import pytest

from service.db import accounts as account_sql
from service.db import transfers as transfer_sql
from service.db import webhooks as webhook_sql
from service.db.json import key_records
from service.db.pool import Database
from tests.conftest import fresh_database

ACCOUNTS = 10_000
KEYS = 120
TRANSFERS = 50_000


@pytest.fixture(scope="module")
async def db(servers):
    admin_url, _ = servers
    with fresh_database(admin_url, "tally_plans") as url:
        # No statement timeout: seeding inserts hundreds of thousands of rows, which
        # took over the service's 5 s once on a busy machine; the plans are the test.
        database = Database(url, min_size=1, max_size=2, statement_timeout_ms=0)
        await database.open()
        tenant = uuid.uuid4()
        async with database.connection() as conn:
            await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'plans')", (tenant,))
            await conn.execute(
                "INSERT INTO accounts (tenant_id, id, name, currency)"
                " SELECT %s, gen_random_uuid(), 'a', 'USD' FROM generate_series(1, %s)",
                (tenant, ACCOUNTS),
            )
            # Transfers between scattered pairs of accounts, about ten on each.
            await conn.execute(
                "WITH a AS (SELECT id, row_number() OVER (ORDER BY id) AS r FROM accounts)"
                " INSERT INTO transfers (tenant_id, id, debit_account_id, credit_account_id,"
                " amount, currency, status, posted_amount, debit_balance_after,"
                " credit_balance_after, created_at, updated_at)"
                " SELECT %s, gen_random_uuid(), d.id, c.id, 1, 'USD', 'posted', 1, 0, 0,"
                "  now(), now()"
                " FROM generate_series(1::bigint, %s) g"
                " JOIN a d ON d.r = 1 + (g * 7919) %% %s"
                " JOIN a c ON c.r = 1 + (g * 104729 + 13) %% %s"
                " WHERE d.id <> c.id",
                (tenant, TRANSFERS, ACCOUNTS, ACCOUNTS),
            )
            await conn.execute(
                "INSERT INTO entries (tenant_id, account_id, transfer_id, kind, amount,"
                " pending_amount, posted_after, pending_debits_after, pending_credits_after,"
                " created_at)"
                " SELECT tenant_id, debit_account_id, id, 'posted', -1, 0, 0, 0, 0, now()"
                " FROM transfers"
            )
            await conn.execute("ANALYZE accounts")
            await conn.execute("ANALYZE transfers")
            await conn.execute("ANALYZE entries")
            cur = await conn.execute(
                "SELECT tenant_id, id FROM accounts ORDER BY id LIMIT %s", (KEYS,)
            )
            keys = list(await cur.fetchall())
        yield database, keys
        await database.close()


async def plan(db: Database, sql: str, params) -> str:
    async with db.connection() as conn:
        cur = await conn.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in await cur.fetchall())


def records(keys):
    return (key_records(keys),)


async def test_sessions_use_the_ssd_page_cost(db):
    database, _ = db
    async with database.connection() as conn:
        cur = await conn.execute("SHOW random_page_cost")
        assert (await cur.fetchone())[0] == "1.1"


async def test_locking_a_batchs_accounts_uses_the_primary_key(db):
    database, keys = db
    text = await plan(database, transfer_sql._LOCK_ACCOUNTS, records(keys))
    assert "accounts_pkey" in text and "Seq Scan on accounts" not in text, text


async def test_coalesced_account_reads_use_the_primary_key(db):
    database, keys = db
    text = await plan(database, account_sql._GET_MANY, records(keys))
    assert "accounts_pkey" in text and "Seq Scan on accounts" not in text, text


async def test_the_batch_write_updates_balances_through_the_primary_key(db):
    database, keys = db
    balances = [{"t": str(t), "i": str(i), "po": 1, "pd": 0, "pc": 0} for t, i in keys]
    tables = {name: "[]" for name in ("transfers", "settled", "entries", "counts", "events")}
    params = {"ts": None, **tables, "accounts": json.dumps(balances), "replies": "[]"}
    text = await plan(database, transfer_sql._WRITE, params)
    update = text[text.index("CTE balances") : text.index("CTE sequences")]
    assert "accounts_pkey" in update and "Seq Scan on accounts" not in update, update


async def test_coalesced_transfer_reads_use_the_primary_key(db):
    database, keys = db
    text = await plan(database, transfer_sql._GET_MANY, records(keys))
    assert "transfers_pkey" in text and "Seq Scan on transfers" not in text, text


def pages(keys, cursor) -> tuple[str]:
    """A coalesced page of 21 rows for each account, below `cursor`."""
    return (json.dumps([
        {"n": n, "t": str(t), "a": str(a), "l": 21, "b": cursor} for n, (t, a) in enumerate(keys)
    ]),)  # fmt: skip


async def test_coalesced_account_pages_read_both_sides_through_their_indexes(db):
    database, keys = db
    text = await plan(database, transfer_sql._ACCOUNT_PAGES, pages(keys, transfer_sql._NO_CURSOR))
    assert "transfers_by_debit" in text and "transfers_by_credit" in text, text
    assert "Seq Scan on transfers" not in text, text


async def test_coalesced_statement_pages_read_through_the_account_index(db):
    database, keys = db
    cursor = transfer_sql._NO_ENTRY_CURSOR
    text = await plan(database, transfer_sql._ENTRY_PAGES, pages(keys, cursor))
    assert "entries_by_account" in text and "accounts_pkey" in text, text
    assert "Seq Scan on entries" not in text and "Seq Scan on accounts" not in text, text


async def test_purging_old_deliveries_reads_the_settled_index(db):
    """200,000 settled deliveries over 23 days: the retention purge takes the oldest
    through webhook_deliveries_settled and deletes them through the primary key,
    not by reading them all every pass."""
    database, keys = db
    tenant = keys[0][0]
    endpoint = uuid.uuid4()
    async with database.connection() as conn:
        await conn.execute(
            "INSERT INTO webhook_endpoints (tenant_id, id, url, event_types, secret,"
            " fanned_out_seq) VALUES (%s, %s, 'https://example.com/', '{*}', '\\x00', 0)",
            (tenant, endpoint),
        )
        await conn.execute(
            "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event_id, sequence,"
            " event_type, status, created_at)"
            " SELECT %s, gen_random_uuid(), %s, gen_random_uuid(), g, 'account.created',"
            "  CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'delivered' END,"
            "  now() - make_interval(secs => (200000 - g) * 10)"
            " FROM generate_series(1, 200000) g",
            (tenant, endpoint),
        )
        await conn.execute("ANALYZE webhook_deliveries")
    params = {"tenants": None, "retention": 22 * 24 * 3600, "limit": 5000}
    text = await plan(database, webhook_sql._PURGE, params)
    assert "webhook_deliveries_settled" in text, text
    # The cutoff bounds the index scan (a volatile clock would only filter it,
    # reading every settled delivery whenever fewer than `limit` are due).
    assert "Index Cond: (created_at <" in text, text
    assert "webhook_deliveries_pkey" in text, text
    assert "Seq Scan on webhook_deliveries" not in text, text
