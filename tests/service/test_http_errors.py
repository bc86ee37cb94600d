"""The error envelope on routing errors, size limits, content types and request ids."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.errors import EXCEPTION_HANDLERS
from service.middleware import Envelope
from tests.conftest import make_tenant, serving


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert response.headers.get("x-request-id")
    return body["error"]


async def test_unknown_route_is_404_envelope(client):
    assert_envelope(await client.get("/api/nothing-here"), 404, "NOT_FOUND")
    assert_envelope(await client.get("/"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_envelope(client):
    r = await client.delete("/api/accounts")
    assert_envelope(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["allow"] and "POST" in r.headers["allow"]


async def test_body_over_limit_by_content_length_is_413(client, tenant):
    body = b'{"name": "' + b"x" * (64 * 1024) + b'", "currency": "USD"}'
    r = await client.post(
        "/api/accounts",
        content=body,
        headers={**tenant.headers(), "Content-Type": "application/json"},
    )
    err = assert_envelope(r, 413, "PAYLOAD_TOO_LARGE")
    assert err["details"]["limit_bytes"] == 64 * 1024


async def test_streamed_body_over_limit_is_413(client, tenant):
    async def chunks():
        for _ in range(80):
            yield b"x" * 1024

    r = await client.post(
        "/api/accounts",
        content=chunks(),
        headers={**tenant.headers(), "Content-Type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    assert_envelope(r, 413, "PAYLOAD_TOO_LARGE")


async def test_invalid_content_length_is_400(app):
    received = []

    async def send(message):
        received.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/accounts",
        "raw_path": b"/api/accounts",
        "query_string": b"",
        "headers": [(b"content-length", b"12abc")],
        "app": app,
    }
    await Envelope(app, 1024, 2048)(scope, receive, send)
    assert received[0]["status"] == 400


def _scope(app, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": headers, "app": app}  # fmt: skip


async def test_a_body_that_stops_arriving_is_408_and_moves_nothing(settings):
    """The route waits for the rest of a body only until the deadline
    (TALLY_BODY_TIMEOUT_SECONDS): then 408, and nothing is written."""
    async with serving(settings.with_overrides(body_timeout_seconds=0.3)) as (app, http):
        tenant = await make_tenant(app, "slow body")
        headers = tenant.headers()
        ids = []
        for name in ("from", "to"):
            r = await http.post(
                "/api/accounts",
                json={"name": name, "currency": "USD", "overdraft_limit": None},
                headers=headers,
            )
            ids.append(r.json()["data"]["id"])
        body = json.dumps({"debit_account_id": ids[0], "credit_account_id": ids[1],
                           "amount": 5, "currency": "USD"}).encode()  # fmt: skip
        parts = [{"type": "http.request", "body": body[:20], "more_body": True}]
        stalled = asyncio.Event()

        async def receive():
            if parts:
                return parts.pop(0)
            stalled.set()
            await asyncio.Event().wait()  # the rest never comes

        sent = []

        async def send(message):
            sent.append(message)

        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await asyncio.wait_for(app(_scope(app, "POST", "/api/transfers", raw), receive, send), 10)
        assert stalled.is_set()
        assert sent[0]["status"] == 408
        error = json.loads(sent[1]["body"])["error"]
        assert error["code"] == "REQUEST_TIMEOUT"
        assert error["details"] == {"timeout_seconds": 0.3}
        for account_id in ids:
            r = await http.get(f"/api/accounts/{account_id}", headers=headers)
            assert r.json()["data"]["balance"]["posted"] == 0
        r = await http.get("/api/transfers", headers=headers)
        assert r.json()["data"] == []


async def test_the_deadline_ends_with_the_body():
    """Once the whole body is in, a route may wait on receive (for a disconnect)
    as long as it likes: the deadline is the body's, not the request's."""
    disconnected = asyncio.Event()
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def waits_for_the_client(request):
        await request.body()
        message = await request.receive()  # outlives the 0.05 s deadline
        return JSONResponse({"then": message["type"]})

    app = Starlette(routes=[Route("/wait", waits_for_the_client, methods=["POST"])])
    envelope = Envelope(app, 1024, 2048, EXCEPTION_HANDLERS, body_timeout=0.05)
    sent = []

    async def send(message):
        sent.append(message)

    served = asyncio.ensure_future(envelope(_scope(app, "POST", "/wait", []), receive, send))
    await asyncio.sleep(0.3)
    assert not served.done() and sent == []
    disconnected.set()
    await asyncio.wait_for(served, 5)
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"]) == {"then": "http.disconnect"}


async def test_wrong_content_type_is_415(client, tenant):
    r = await client.post(
        "/api/accounts",
        content=b'{"name": "a", "currency": "USD"}',
        headers={**tenant.headers(), "Content-Type": "text/plain"},
    )
    assert_envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_request_id_is_echoed(client):
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


async def test_request_id_is_generated_when_absent_or_unusable(client):
    r1 = await client.get("/healthz")
    r2 = await client.get("/healthz", headers={"X-Request-Id": "has space"})
    assert len(r1.headers["x-request-id"]) == 32
    assert r2.headers["x-request-id"] != "has space"
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]


@pytest.fixture
async def crashing_client():
    async def boom(request):
        raise RuntimeError("secret internals")

    # The Envelope inside a plain Starlette app (Tally's has nothing around it).
    crashing = Starlette(
        routes=[Route("/boom", boom)],
        middleware=[Middleware(Envelope, max_body=1024, max_batch_body=2048)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    transport = httpx.ASGITransport(app=crashing, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


async def test_unhandled_error_is_500_envelope_without_internals(crashing_client, caplog):
    r = await crashing_client.get("/boom", headers={"X-Request-Id": "req-42"})
    err = assert_envelope(r, 500, "INTERNAL_ERROR")
    assert err["details"] == {"request_id": "req-42"}
    assert "secret internals" not in r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    "types",
    [["application/json", "text/plain"], ["text/plain", "application/json"],
     ["application/json", "application/json"]],
)  # fmt: skip
async def test_a_content_type_given_twice_is_400_and_writes_nothing(client, tenant, types):
    headers = [*tenant.headers().items(), *(("Content-Type", t) for t in types)]
    r = await client.post("/api/accounts", content=b'{"name": "twice", "currency": "USD"}',
                          headers=headers)  # fmt: skip
    err = assert_envelope(r, 400, "BAD_REQUEST")
    assert err["details"]["fields"] == [{"field": "Content-Type", "message": "must be given once"}]
    listed = await client.get("/api/accounts", headers=tenant.headers())
    assert [a["name"] for a in listed.json()["data"]] == []
    form = "application/x-www-form-urlencoded"
    r = await client.post(
        "/api/auth/token",
        content=f"grant_type=client_credentials&client_id={tenant.client_id}"
        f"&client_secret={tenant.client_secret}".encode(),
        headers=[("Content-Type", form), ("Content-Type", form)],
    )
    assert_envelope(r, 400, "BAD_REQUEST")
