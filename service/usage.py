"""Per-worker request counting for `GET /api/usage`, flushed to PostgreSQL.

The request path only increments a dict entry (client, method, route
template, status, hour); a background task in each worker adds the counts
to `api_usage` with one upsert every `TALLY_USAGE_FLUSH_SECONDS`, and once
more at shutdown. Counts a flush could not write (database down) are kept
and retried; a worker killed outright loses at most one interval's counts.
Only authenticated requests are counted: usage is per API client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from service.db import usage as sql
from service.db.pool import Database, DatabaseUnavailable

log = logging.getLogger("tally.usage")

# Beyond this many distinct keys between flushes, new keys are dropped (and
# logged once): a bound on memory while the database is down for long.
MAX_KEYS = 200_000


class UsageRecorder:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        # Keyed by the tenant id's integer: a uuid.UUID hashes in Python (its
        # __hash__), twice a request here, where an int hashes in C.
        self._counts: dict[tuple[int, str, int, str, str, int], int] = {}
        self._max_keys = max_keys
        self._dropping = False

    def record(self, state: dict[str, Any] | None, method: str, route: str, status: int) -> None:
        """Count one finished request of the principal in `state` (none: not counted)."""
        principal = state.get("principal") if state else None
        if principal is None:
            return
        key = (principal.tenant_id.int, principal.client_id, int(time.time()) // 3600,
               method, route, status)  # fmt: skip
        counts = self._counts
        n = counts.get(key)
        if n is not None:
            counts[key] = n + 1
        elif len(counts) < self._max_keys:
            counts[key] = 1
        elif not self._dropping:
            self._dropping = True
            log.error("usage counts full (%d keys unflushed); dropping new keys", len(counts))

    @property
    def pending(self) -> int:
        return sum(self._counts.values())

    async def flush(self, db: Database) -> int:
        """Add the counts so far to `api_usage`; returns the requests written."""
        if not self._counts:
            return 0
        taken, self._counts = self._counts, {}
        rows: sql.Counts = {
            (uuid.UUID(int=tenant), client, datetime.fromtimestamp(hour * 3600, UTC), method,
             route, status): n
            for (tenant, client, hour, method, route, status), n in taken.items()
        }  # fmt: skip
        try:
            async with db.connection() as conn:
                await sql.add_requests(conn, rows)
        except BaseException:
            # Not written: put them back (merged with what arrived meanwhile).
            for key, n in taken.items():
                self._counts[key] = self._counts.get(key, 0) + n
            raise
        self._dropping = False
        return sum(taken.values())

    async def run(self, db: Database, interval: float) -> None:
        """Flush every `interval` seconds until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.flush(db)
                except DatabaseUnavailable:
                    pass  # the pool logs the outage once; the counts wait
                except Exception:
                    log.exception("flushing usage counts")
        finally:
            with contextlib.suppress(Exception):
                await self.flush(db)
