"""Statements and point-in-time balances, read from the recorded balances-after."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from service.coalesce import MAX_COALESCED_PAGE, MAX_PAGES_PER_QUERY, Coalescer
from service.db import accounts as account_sql
from service.db import transfers as sql
from service.db.pool import Database
from service.ledger.accounts import AccountReader, get_account
from service.ledger.errors import NotFound


class EntryReader:
    """Reads statements. The common page (one account's newest entries, maybe
    below a cursor, up to MAX_COALESCED_PAGE) is read with every other such
    page asked for meanwhile in one query (see service.coalesce); other pages
    are a query of their own."""

    def __init__(self, db: Database, *, max_inflight: int = 2) -> None:
        self.db = db
        self.pages: Coalescer[sql.EntryPage, list[tuple] | None] = Coalescer(
            db.batch_query(sql.entry_pages),
            max_size=MAX_PAGES_PER_QUERY,
            max_inflight=max_inflight,
        )


async def entries(
    reader: EntryReader,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    *,
    limit: int,
    before: int | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> tuple[list[tuple], bool]:
    """One page of an account's entries, newest first, and whether more follow."""
    if created_from is None and created_to is None and limit <= MAX_COALESCED_PAGE:
        found = await reader.pages.call((tenant_id, account_id, limit + 1, before))
        if found is None:
            raise NotFound("account")
        rows = found
    else:
        async with reader.db.connection() as conn:
            if await account_sql.get(conn, tenant_id, account_id) is None:
                raise NotFound("account")
            rows = await sql.entries(
                conn, tenant_id, account_id, limit=limit + 1, before=before,
                created_from=created_from, created_to=created_to,
            )  # fmt: skip
    return rows[:limit], len(rows) > limit


async def balance_at(
    db: Database,
    reader: AccountReader,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    at: datetime | None,
) -> tuple[int, int, int, datetime]:
    """(posted, pending_debits, pending_credits, instant) now, or as of `at`.

    Now is the account's row, read with the other account reads in flight
    (see AccountReader).
    """
    if at is None:
        row = await get_account(reader, tenant_id, account_id)
        return row[5], row[6], row[7], datetime.now(UTC)
    async with db.connection() as conn:
        if await account_sql.get(conn, tenant_id, account_id) is None:
            raise NotFound("account")
        found = await sql.balance_at(conn, tenant_id, account_id, at)
    at = at.astimezone(UTC)
    if found is None:  # before the account's first change (or before it existed)
        return 0, 0, 0, at
    return found[0], found[1], found[2], at
