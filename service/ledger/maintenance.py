"""Background upkeep in each worker: expire due holds, purge old idempotency keys."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from typing import Protocol

from fastpath import kernel
from service.db import idempotency as idem_sql
from service.db import transfers as sql
from service.db.pool import DatabaseUnavailable
from service.ledger.transfers import NewTransfer, NotCommitted, Request, Settle, TransferEngine
from service.ledger.vault import Vault
from service.tasks import cancel_requested

log = logging.getLogger("tally.maintenance")


class Reloadable(Protocol):
    async def reload(self) -> None: ...


EXPIRY_BATCH = 1000


async def expire_due(engine: TransferEngine) -> int:
    """Expire every hold past its expires_at; returns how many this call expired.

    Expiry goes through the same group commit as posts and voids, so whichever
    of post, void or expiry is applied first wins and the hold is released once.
    """
    async with engine.db.connection() as conn:
        due = await sql.due_holds(conn, EXPIRY_BATCH)
    by_tenant: dict[uuid.UUID, list[NewTransfer | Settle]] = defaultdict(list)
    for tenant_id, transfer_id in due:
        by_tenant[tenant_id].append(Settle(transfer_id, kernel.EXPIRE))
    results = await asyncio.gather(
        *(engine.submit(Request(tenant_id, ops)) for tenant_id, ops in by_tenant.items())
    )
    # Without idempotency keys every request is applied (never `Claimed`).
    return sum(
        code is None for outcomes in results if isinstance(outcomes, list) for code, _ in outcomes
    )


async def purge_keys(engine: TransferEngine, retention_seconds: float) -> int:
    async with engine.db.connection() as conn:
        return await idem_sql.purge(conn, retention_seconds)


async def run(
    engine: TransferEngine,
    vault: Vault,
    tokens: Reloadable | None = None,
    *,
    interval: float,
    key_retention: float,
    purge_every: float = 300.0,
    keys_every: float = 30.0,
) -> None:
    """Loop until cancelled; an outage only pauses the work."""
    next_purge = time.monotonic() + purge_every
    next_keys = time.monotonic()
    while True:
        try:
            await expire_due(engine)
            if time.monotonic() >= next_keys:
                # Pick up rotated keys, then move holders onto the active one.
                next_keys = time.monotonic() + keys_every
                await vault.load()
                if tokens is not None:
                    await tokens.reload()
                while await vault.reseal():
                    pass
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + purge_every
                await purge_keys(engine, key_retention)
        except (DatabaseUnavailable, NotCommitted):
            pass
        except Exception:
            log.exception("maintenance pass failed")
        if cancel_requested():  # a cancellation swallowed on the way (see service.tasks)
            raise asyncio.CancelledError
        await asyncio.sleep(interval)
