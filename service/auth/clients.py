"""API clients: creating them (secret shown once) and checking their credentials."""

from __future__ import annotations

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
    db: Database, tenant_id: uuid.UUID, scopes: tuple[str, ...], name: str = ""
) -> NewClient:
    """Create a client; its secret exists in clear only in the returned value."""
    secret = credentials.generate_secret()
    async with db.connection() as conn:
        client_id = await sql.create_client(
            conn, tenant_id, credentials.hash_secret(secret), scopes, name
        )
    return NewClient(tenant_id, client_id, secret, scopes)


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
