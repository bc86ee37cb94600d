"""SQL for tenants and their API clients."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg

from service.db.ids import new_id


@dataclass(frozen=True, slots=True)
class ClientRow:
    tenant_id: uuid.UUID
    id: uuid.UUID
    name: str
    secret_hash: bytes
    scopes: tuple[str, ...]
    status: str
    created_at: datetime
    rate_limit: int | None = None
    burst: int | None = None


_CLIENT_COLUMNS = "tenant_id, id, name, secret_hash, scopes, status, created_at, rate_limit, burst"


def _client(row: tuple) -> ClientRow:
    return ClientRow(
        row[0], row[1], row[2], bytes(row[3]), tuple(row[4]), row[5], row[6], row[7], row[8]
    )


async def create_tenant(conn: psycopg.AsyncConnection, name: str) -> uuid.UUID:
    tenant_id = new_id()
    await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant_id, name))
    return tenant_id


async def find_tenant(conn: psycopg.AsyncConnection, ref: str) -> uuid.UUID | None:
    """A tenant by id or, failing that, by exact name (the oldest such tenant)."""
    from service.db.ids import parse_id

    tenant_id = parse_id(ref)
    if tenant_id is not None:
        cur = await conn.execute("SELECT id FROM tenants WHERE id = %s", (tenant_id,))
    else:
        cur = await conn.execute(
            "SELECT id FROM tenants WHERE name = %s ORDER BY created_at, id LIMIT 1", (ref,)
        )
    row = await cur.fetchone()
    return row[0] if row else None


async def list_tenants(conn: psycopg.AsyncConnection) -> list[tuple[uuid.UUID, str, datetime]]:
    cur = await conn.execute("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")
    return list(await cur.fetchall())


async def create_client(
    conn: psycopg.AsyncConnection,
    tenant_id: uuid.UUID,
    secret_hash: bytes,
    scopes: tuple[str, ...],
    name: str = "",
    rate_limit: int | None = None,
    burst: int | None = None,
) -> uuid.UUID:
    client_id = new_id()
    await conn.execute(
        "INSERT INTO api_clients (tenant_id, id, name, secret_hash, scopes, rate_limit, burst)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (tenant_id, client_id, name, secret_hash, list(scopes), rate_limit, burst),
    )
    return client_id


async def set_client_limits(
    conn: psycopg.AsyncConnection, client_id: uuid.UUID, rate_limit: int | None, burst: int | None
) -> bool:
    """Set (or with None, reset to the default) a client's rate limit and burst."""
    cur = await conn.execute(
        "UPDATE api_clients SET rate_limit = %s, burst = %s WHERE id = %s",
        (rate_limit, burst, client_id),
    )
    return cur.rowcount == 1


async def get_client(conn: psycopg.AsyncConnection, client_id: uuid.UUID) -> ClientRow | None:
    cur = await conn.execute(
        f"SELECT {_CLIENT_COLUMNS} FROM api_clients WHERE id = %s", (client_id,)
    )
    row = await cur.fetchone()
    return _client(row) if row else None


async def list_clients(
    conn: psycopg.AsyncConnection, tenant_id: uuid.UUID | None = None
) -> list[ClientRow]:
    if tenant_id is None:
        cur = await conn.execute(
            f"SELECT {_CLIENT_COLUMNS} FROM api_clients ORDER BY created_at, id"
        )
    else:
        cur = await conn.execute(
            f"SELECT {_CLIENT_COLUMNS} FROM api_clients WHERE tenant_id = %s"
            " ORDER BY created_at, id",
            (tenant_id,),
        )
    return [_client(r) for r in await cur.fetchall()]


async def revoke_client(conn: psycopg.AsyncConnection, client_id: uuid.UUID) -> bool:
    cur = await conn.execute(
        "UPDATE api_clients SET status = 'revoked', revoked_at = now()"
        " WHERE id = %s AND status = 'active'",
        (client_id,),
    )
    return cur.rowcount == 1
