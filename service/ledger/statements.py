"""Statements and point-in-time balances, read from the recorded balances-after."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from service.db import accounts as account_sql
from service.db import transfers as sql
from service.db.pool import Database
from service.ledger.errors import NotFound


async def entries(
    db: Database,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    *,
    limit: int,
    before: int | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> tuple[list[tuple], bool]:
    """One page of an account's entries, newest first, and whether more follow."""
    async with db.connection() as conn:
        if await account_sql.get(conn, tenant_id, account_id) is None:
            raise NotFound("account")
        rows = await sql.entries(
            conn, tenant_id, account_id, limit=limit + 1, before=before,
            created_from=created_from, created_to=created_to,
        )  # fmt: skip
    return rows[:limit], len(rows) > limit


async def balance_at(
    db: Database, tenant_id: uuid.UUID, account_id: uuid.UUID, at: datetime | None
) -> tuple[int, int, int, datetime]:
    """(posted, pending_debits, pending_credits, instant) now, or as of `at`."""
    async with db.connection() as conn:
        row = await account_sql.get(conn, tenant_id, account_id)
        if row is None:
            raise NotFound("account")
        if at is None:
            return row[5], row[6], row[7], datetime.now(UTC)
        found = await sql.balance_at(conn, tenant_id, account_id, at)
    at = at.astimezone(UTC)
    if found is None:  # before the account's first change (or before it existed)
        return 0, 0, 0, at
    return found[0], found[1], found[2], at
