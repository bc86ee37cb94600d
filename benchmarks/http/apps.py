"""The two baselines: (a) a bare ASGI app with a static JSON body, (b) one Starlette route.

(b) returns what `GET /api/accounts/{id}` returns, encoded by msgspec, with no
authentication, rate limiting, database or middleware: the ceiling a
Starlette route can reach on these granian settings.

`starlette_read` is a diagnostic, not a baseline of the table: (b) plus
Tally's own coalesced account read (`python -m benchmarks.http.cpu --target
read`), the ceiling of any route that reads the account from PostgreSQL,
before Tally's authentication, rate limiting, metrics and middleware.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_STATIC_BODY = b'{"status":"ok"}'
_STATIC_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"15")]


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """(a): the least an ASGI app can do per request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _STATIC_HEADERS})
    await send({"type": "http.response.body", "body": _STATIC_BODY})


_encode = msgspec.json.Encoder().encode

# The shape of an account as GET /api/accounts/{id} answers it.
_ACCOUNT = {
    "name": "Operating account",
    "currency": "USD",
    "status": "active",
    "overdraft_limit": None,
    "balance": {"posted": 125_000, "pending_debits": 0, "pending_credits": 0, "available": 125_000},
    "metadata": {},
    "version": 1,
    "created_at": "2026-01-01T00:00:00.000000Z",
    "updated_at": "2026-01-01T00:00:00.000000Z",
}


async def _account(request: Request) -> Response:
    body = _encode({"data": {"id": request.path_params["id"], **_ACCOUNT}})
    return Response(body, media_type="application/json")


def bare_starlette() -> Starlette:
    """(b): one Starlette route returning msgspec-encoded JSON (a granian factory)."""
    return Starlette(routes=[Route("/api/accounts/{id}", _account)])


READ_DATABASE_ENV = "TALLY_BENCH_READ_DATABASE_URL"
READ_TENANT_ENV = "TALLY_BENCH_READ_TENANT"


def starlette_read() -> Starlette:
    """(b) with the account read from PostgreSQL as Tally reads it (coalesced) and
    Tally's collector settings, for the tenant and database the environment names
    (a granian factory)."""
    from fastpath import codec
    from service.app import _tune_gc
    from service.db.pool import Database
    from service.ledger.accounts import AccountReader, get_account

    db = Database(os.environ[READ_DATABASE_ENV])
    reader = AccountReader(db)
    tenant_id = uuid.UUID(os.environ[READ_TENANT_ENV])

    async def account(request: Request) -> Response:
        if request.path_params["id"] == "probe":  # the harness's health check
            return Response(b"{}", media_type="application/json")
        row = await get_account(reader, tenant_id, uuid.UUID(request.path_params["id"]))
        body = _encode({"data": codec.account_to_dict(row, False)})
        return Response(body, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.open()
        _tune_gc()  # Tally's garbage-collector settings: the same tail latency
        yield
        await db.close()

    return Starlette(routes=[Route("/api/accounts/{id}", account)], lifespan=lifespan)
