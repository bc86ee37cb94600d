"""API clients: creating them (secret shown once) and checking their credentials."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from service.auth import credentials
from service.db import tenants as sql
from service.db.ids import parse_id
from service.db.pool import Database
from service.db.tenants import ClientRow


@dataclass(frozen=True, slots=True)
class NewClient:
    tenant_id: uuid.UUID
    client_id: uuid.UUID
    client_secret: str
    scopes: tuple[str, ...]


async def create_client(
    db: Database,
    tenant_id: uuid.UUID,
    scopes: tuple[str, ...],
    name: str = "",
    rate_limit: int | None = None,
    burst: int | None = None,
) -> NewClient:
    """Create a client; its secret exists in clear only in the returned value."""
    secret = credentials.generate_secret()
    async with db.connection() as conn:
        client_id = await sql.create_client(
            conn, tenant_id, credentials.hash_secret(secret), scopes, name, rate_limit, burst
        )
    return NewClient(tenant_id, client_id, secret, scopes)


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What each request of a client is checked against."""

    active: bool
    rate: float
    burst: int


class ClientDirectory:
    """Clients' status and rate limits, cached per worker for `ttl` seconds.

    The cache bounds how long a revoked client's unexpired tokens keep
    working, and how long a changed limit takes to apply.
    """

    def __init__(self, db: Database, *, rate: float, burst: int, ttl: float) -> None:
        self._db = db
        self._rate = rate
        self._burst = burst
        self._ttl = ttl
        self._cache: dict[str, tuple[ClientPolicy, float]] = {}

    def cached(self, client_id: str) -> ClientPolicy | None:
        """The client's policy while it is cached, else None (ask `policy`)."""
        cached = self._cache.get(client_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    async def policy(self, client_id: str) -> ClientPolicy:
        cached = self.cached(client_id)
        if cached is not None:
            return cached
        now = time.monotonic()
        parsed = parse_id(client_id)
        row = None
        if parsed is not None:
            async with self._db.connection() as conn:
                row = await sql.get_client(conn, parsed)
        if row is None:
            policy = ClientPolicy(False, self._rate, self._burst)
        else:
            policy = ClientPolicy(
                row.status == "active",
                float(row.rate_limit or self._rate),
                row.burst or self._burst,
            )
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[client_id] = (policy, now + self._ttl)
        return policy


async def authenticate(db: Database, client_id: str, secret: str) -> ClientRow | None:
    """The active client these credentials prove, or None (unknown, wrong or revoked)."""
    parsed = parse_id(client_id)
    row = None
    if parsed is not None:
        async with db.connection() as conn:
            row = await sql.get_client(conn, parsed)
    if row is None:
        # Spend the same hashing work as a real check, so timing does not
        # reveal which client ids exist.
        credentials.verify_secret(secret, b"\0" * 32)
        return None
    if not credentials.verify_secret(secret, row.secret_hash) or row.status != "active":
        return None
    return row
