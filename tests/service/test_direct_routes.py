"""The Envelope's direct route, `GET /api/accounts/{id}`, answers exactly as the
router would: the same status, body and headers in every case, the same metrics
label and usage count; and what the direct path does not take goes to the router."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service import metrics
from service.api.routing import direct_routes
from service.app import DIRECT, ENDPOINTS
from service.auth import clients as client_service
from service.auth import scopes
from service.db import tenants as tenant_sql
from service.errors import EXCEPTION_HANDLERS, ApiError
from service.middleware import DirectRoute, Envelope
from tests.conftest import Tenant
from tests.service.api.helpers import ACCOUNTS, open_account

# Headers that follow the client's bucket, which every request drains a little.
_BUCKET = {"ratelimit-remaining", "ratelimit-reset"}


@pytest.fixture
async def routed(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of Tally's own Envelope, with every request left to the router."""
    envelope = app.build_middleware_stack()
    assert isinstance(envelope, Envelope) and envelope.direct
    envelope.direct = {}

    async def routed_app(scope: dict, receive: Any, send: Any) -> None:
        scope["app"] = app
        await envelope(scope, receive, send)

    transport = httpx.ASGITransport(app=routed_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
        yield http


def _answer(r: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in r.headers.multi_items() if k not in _BUCKET)
    return r.status_code, r.content, headers


async def _same(
    client: httpx.AsyncClient, routed: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = {"X-Request-Id": "same-id", **headers}
    direct = _answer(await client.get(path, headers=headers))
    assert direct == _answer(await routed.get(path, headers=headers))
    return direct


async def _client_of(tenant: Tenant, granted: tuple[str, ...], **limits: int) -> Tenant:
    made = await client_service.create_client(
        tenant.app.state.db, tenant.tenant_id, granted, "direct", **limits
    )
    return Tenant(tenant.app, tenant.tenant_id, made.client_id, made.client_secret)


async def test_an_account_reads_the_same_both_ways(client, routed, tenant):
    account_id = await open_account(client, tenant, holder={"name": "Ada"})
    status, body, headers = await _same(client, routed, f"{ACCOUNTS}/{account_id}",
                                        tenant.headers(scopes.LEDGER_READ))  # fmt: skip
    assert status == 200 and b'"holder":null' in body
    assert ("etag", '"1"') in headers and ("cache-control", "no-store") in headers
    assert ("ratelimit-limit", str(tenant.app.state.settings.rate_burst)) in headers
    # With pii:read, the holder is revealed (the vault's path): still the same.
    status, body, _ = await _same(client, routed, f"{ACCOUNTS}/{account_id}",
                                  tenant.headers(scopes.LEDGER_READ, scopes.PII_READ))  # fmt: skip
    assert status == 200 and b'"holder":{"name":"Ada"}' in body


@pytest.mark.parametrize(
    ("segment", "status"),
    [
        (str(uuid.uuid4()), 404),  # no such account
        ("not-a-uuid", 400),
        ("01234567-89ab-cdef-0123-456789abcdeZ", 400),
        ("batch", 404),  # no route takes it (the object_id convertor): the router says so
        ("", 404),
    ],
)
async def test_unknown_and_malformed_ids_answer_the_same(client, routed, tenant, segment, status):
    answer = await _same(client, routed, f"{ACCOUNTS}/{segment}", tenant.headers())
    assert answer[0] == status


async def test_another_tenants_account_answers_the_same(client, routed, tenant, other_tenant):
    account_id = await open_account(client, other_tenant)
    answer = await _same(client, routed, f"{ACCOUNTS}/{account_id}", tenant.headers())
    assert answer[0] == 404


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Basic abc", 401),
        ("Bearer ", 401),
        ("Bearer not.a.token", 401),
    ],
)
async def test_missing_and_bad_tokens_answer_the_same(
    client, routed, tenant, authorization, status
):
    account_id = await open_account(client, tenant)
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await _same(client, routed, f"{ACCOUNTS}/{account_id}", headers)
    assert answer[0] == status


async def test_a_token_without_the_scope_answers_the_same(client, routed, tenant):
    account_id = await open_account(client, tenant)
    answer = await _same(client, routed, f"{ACCOUNTS}/{account_id}",
                         tenant.headers(scopes.LEDGER_WRITE))  # fmt: skip
    assert answer[0] == 403


async def test_a_revoked_client_answers_the_same(app, client, routed, tenant):
    account_id = await open_account(client, tenant)
    revoked = await _client_of(tenant, scopes.ALL)
    async with app.state.db.connection() as conn:
        assert await tenant_sql.revoke_client(conn, revoked.client_id)
    answer = await _same(client, routed, f"{ACCOUNTS}/{account_id}", revoked.headers())
    assert answer[0] == 401


async def test_an_empty_bucket_answers_the_same(client, routed, tenant):
    account_id = await open_account(client, tenant)
    slow = await _client_of(tenant, scopes.ALL, rate_limit=1, burst=1)
    headers = {"X-Request-Id": "same-id", **slow.headers()}
    path = f"{ACCOUNTS}/{account_id}"
    assert (await client.get(path, headers=headers)).status_code == 200
    direct = await client.get(path, headers=headers)
    router = await routed.get(path, headers=headers)
    assert direct.status_code == router.status_code == 429
    # retry_after_seconds and Retry-After follow the bucket too.
    assert direct.json()["error"]["code"] == router.json()["error"]["code"] == "RATE_LIMITED"
    assert {k for k, _ in direct.headers.multi_items()} == {
        k for k, _ in router.headers.multi_items()
    }


async def test_a_body_or_another_method_goes_to_the_router(client, tenant):
    account_id = await open_account(client, tenant)
    path = f"{ACCOUNTS}/{account_id}"
    # A Content-Length (even 0) or HEAD: the router answers, as it always did.
    r = await client.request("GET", path, headers={**tenant.headers(), "Content-Length": "0"})
    assert r.status_code == 200
    r = await client.head(path, headers=tenant.headers())
    assert r.status_code == 200 and r.content == b""
    r = await client.delete(path, headers=tenant.headers())
    assert r.status_code == 405


async def test_both_ways_are_labelled_and_counted_alike(app, client, routed, tenant, monkeypatch):
    account_id = await open_account(client, tenant)
    finished: list[tuple[str, str, int]] = []
    counted: list[tuple[Any, ...]] = []

    def request_finished(method: str, route: str, status: int, seconds: float) -> None:
        finished.append((method, route, status))

    def record(state: dict[str, Any], *key: Any) -> None:
        counted.append((state["principal"].client_id, *key))

    monkeypatch.setattr(metrics, "request_finished", request_finished)
    monkeypatch.setattr(app.state.usage, "record", record)
    path = f"{ACCOUNTS}/{account_id}"
    for http in (client, routed):
        assert (await http.get(path, headers=tenant.headers())).status_code == 200
    label = ("GET", "/api/accounts/{id}", 200)
    assert finished == [label, label]
    assert counted == [(str(tenant.client_id), *label)] * 2


def test_tallys_direct_routes_are_the_routers_own():
    envelope_routes = {(d.method, d.label) for d in _tally_direct()}
    assert envelope_routes == {tuple(name.split(" ", 1)) for name in DIRECT}
    for direct in _tally_direct():
        assert metrics.route_label({"route": direct.route}) == direct.label


def _tally_direct() -> list[DirectRoute]:
    from service.api.routing import build_routes
    from service.app import BUSIEST_PATHS

    return direct_routes(ENDPOINTS, build_routes(ENDPOINTS, first=BUSIEST_PATHS), DIRECT)


def test_a_direct_route_must_name_an_endpoint():
    from service.api.routing import build_routes

    routes = build_routes(ENDPOINTS)
    with pytest.raises(ValueError, match="no route serves"):
        direct_routes(ENDPOINTS, routes, ("GET /api/nowhere/{id}",))
    with pytest.raises(ValueError, match="no route serves"):
        direct_routes(ENDPOINTS, routes, ("DELETE /api/accounts/{id}",))


# The mechanism itself, on a small app: scope fidelity, other responses, errors.


async def _echo(request: Request) -> Response:
    scope = request.scope
    seen = f"{scope['route'].path}|{scope['endpoint'].__name__}|{request.path_params}"
    return Response(seen.encode(), headers={"Cache-Control": "private"})


async def _stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingResponse(chunks(), media_type="text/plain")


async def _refuse(request: Request) -> Response:
    request.scope["state"]["ratelimit"] = [(b"ratelimit-limit", b"7")]
    raise ApiError(409, "REFUSED_TEST", "No.")


async def _crash(request: Request) -> Response:
    raise RuntimeError("internals")


def _small_app() -> tuple[Starlette, Envelope]:
    routes = [
        Route("/api/echo/{id}", _echo),
        Route("/api/stream/{id}", _stream),
        Route("/api/refuse/{id}", _refuse),
        Route("/api/crash/{id}", _crash),
    ]
    app = Starlette(routes=routes)
    direct = [DirectRoute("GET", route, route.endpoint, route.path) for route in routes]
    return app, Envelope(app.router, 100, 100, EXCEPTION_HANDLERS, direct=direct)


async def _small_get(path: str) -> httpx.Response:
    app, envelope = _small_app()

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        scope["app"] = app
        await envelope(scope, receive, send)

    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get(path, headers={"X-Request-Id": "rid"})


async def test_a_direct_handler_sees_the_scope_the_router_gives():
    r = await _small_get("/api/echo/abc")
    assert r.status_code == 200
    assert r.text == "/api/echo/{id}|_echo|{'id': 'abc'}"
    assert r.headers.get_list("cache-control") == ["private"]  # the route's own, kept
    assert r.headers["x-request-id"] == "rid"
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_a_streamed_answer_of_a_direct_handler_is_sent_by_itself():
    r = await _small_get("/api/stream/x")
    assert r.status_code == 200 and r.text == "ab"
    assert r.headers["x-request-id"] == "rid"
    assert r.headers["cache-control"] == "no-store"


async def test_what_a_direct_handler_raises_meets_the_error_boundary():
    refused = await _small_get("/api/refuse/x")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "REFUSED_TEST"
    assert refused.headers["ratelimit-limit"] == "7"
    crashed = await _small_get("/api/crash/x")
    assert crashed.status_code == 500
    assert crashed.json()["error"]["details"] == {"request_id": "rid"}
    assert "internals" not in crashed.text
