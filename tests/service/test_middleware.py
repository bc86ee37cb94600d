"""The Envelope's response headers: request id, nosniff, and on /api/ no-store
unless the route chose its own caching, plus the rate-limit headers."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.middleware import Envelope


async def _cached(request: Request) -> Response:
    return Response(b"{}", headers={"Cache-Control": "public, max-age=60"})


async def _plain(request: Request) -> Response:
    request.scope["state"]["ratelimit"] = [(b"ratelimit-limit", b"10")]
    return Response(b"{}")


def _app() -> Envelope:
    routes = [Route(p, h) for p in ("/api/cached", "/cached") for h in (_cached,)]
    routes += [Route(p, _plain) for p in ("/api/plain", "/plain")]
    return Envelope(Starlette(routes=routes), max_body=100, max_batch_body=100)


@pytest.mark.parametrize(
    ("path", "cache_control", "limited"),
    [
        ("/api/cached", ["public, max-age=60"], False),
        ("/api/plain", ["no-store"], True),
        ("/cached", ["public, max-age=60"], False),
        ("/plain", [], False),  # outside /api/: neither no-store nor rate-limit headers
    ],
)
async def test_response_headers(path, cache_control, limited):
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.get(path, headers={"X-Request-Id": "req-123"})
    assert r.status_code == 200
    assert r.headers.get_list("cache-control") == cache_control
    assert r.headers.get_list("x-request-id") == ["req-123"]
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert r.headers.get_list("ratelimit-limit") == (["10"] if limited else [])
