"""The two baselines: (a) a bare ASGI app with a static JSON body, (b) one Starlette route.

(b) returns what `GET /api/accounts/{id}` returns, encoded by msgspec, with no
authentication, rate limiting, database or middleware: the ceiling a
Starlette route can reach on these granian settings.
"""

from __future__ import annotations

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
