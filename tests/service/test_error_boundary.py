"""The Envelope as the app's error boundary: what a route raises is answered by its
exception handler (by class, nearest base first), anything else is a 500 envelope;
Tally's app has no ServerErrorMiddleware or ExceptionMiddleware of Starlette's besides."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service.app import _Tally, create_app
from service.errors import EXCEPTION_HANDLERS, ApiError
from service.middleware import Envelope


class _Refused(ApiError):
    """A subclass: answered by ApiError's handler."""


async def _api_error(request: Request) -> Response:
    request.scope.setdefault("state", {})["ratelimit"] = [(b"ratelimit-limit", b"5")]
    raise ApiError(409, "CONFLICT_TEST", "No.", {"why": "test"}, headers={"Retry-After": "3"})


async def _subclass(request: Request) -> Response:
    raise _Refused(422, "SUB_TEST", "Sub.")


async def _crash(request: Request) -> Response:
    raise RuntimeError("internals")


async def _handler_crash(request: Request) -> Response:
    raise KeyError("x")


async def _late(request: Request) -> Response:
    async def body():
        yield b"{"
        raise ApiError(409, "TOO_LATE", "After the start.")

    return StreamingResponse(body(), media_type="application/json")


async def _broken_handler(request: Request, exc: Exception) -> Response:
    raise RuntimeError("the handler itself")


def _app() -> _Tally:
    routes = [
        Route("/api/error", _api_error),
        Route("/api/subclass", _subclass),
        Route("/api/crash", _crash),
        Route("/api/handler-crash", _handler_crash),
        Route("/api/late", _late),
    ]
    handlers = {**EXCEPTION_HANDLERS, KeyError: _broken_handler}
    # Composed as service.app composes Tally.
    return _Tally(
        routes=routes,
        middleware=[Middleware(Envelope, max_body=100, max_batch_body=100, handlers=handlers)],
    )


def _scope(path: str) -> dict:
    """A GET of `path`, for calling the app directly."""
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": [], "http_version": "1.1", "scheme": "http",
            "server": ("t", 80), "client": ("c", 1), "root_path": ""}  # fmt: skip


def _client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def _error(r: httpx.Response) -> dict:
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-request-id"]
    return r.json()["error"]


async def test_a_raised_error_is_its_handlers_answer_with_the_usual_headers(caplog):
    async with _client() as http:
        r = await http.get("/api/error", headers={"X-Request-Id": "req-1"})
    assert r.status_code == 409
    assert _error(r) == {"code": "CONFLICT_TEST", "message": "No.", "details": {"why": "test"}}
    assert r.headers["retry-after"] == "3"
    assert r.headers["x-request-id"] == "req-1"
    assert r.headers["ratelimit-limit"] == "5"  # set by the route before it raised
    assert r.headers["cache-control"] == "no-store"
    assert "unhandled" not in caplog.text


async def test_a_subclass_is_answered_by_its_bases_handler():
    async with _client() as http:
        r = await http.get("/api/subclass")
    assert r.status_code == 422 and _error(r)["code"] == "SUB_TEST"


async def test_unknown_routes_and_methods_are_answered_in_the_envelope():
    async with _client() as http:
        missing = await http.get("/api/nowhere")
        wrong = await http.post("/api/error")
    assert missing.status_code == 404 and _error(missing)["code"] == "NOT_FOUND"
    assert wrong.status_code == 405 and _error(wrong)["code"] == "METHOD_NOT_ALLOWED"
    assert wrong.headers["allow"]


@pytest.mark.parametrize("path", ["/api/crash", "/api/handler-crash"])
async def test_no_handler_or_a_failing_one_is_a_500_envelope(path, caplog):
    caplog.set_level(logging.ERROR, "tally.http")
    async with _client() as http:
        r = await http.get(path, headers={"X-Request-Id": "req-2"})
    assert r.status_code == 500
    assert _error(r) == {
        "code": "INTERNAL_ERROR",
        "message": "Something went wrong on our side.",
        "details": {"request_id": "req-2"},
    }
    assert "internals" not in r.text and "handler itself" not in r.text
    assert "unhandled error in request req-2" in caplog.text


async def test_an_error_after_the_response_started_sends_nothing_more(caplog):
    caplog.set_level(logging.ERROR, "tally.http")
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    never = asyncio.Event()

    async def receive() -> dict:
        await never.wait()  # the client stays connected (StreamingResponse listens)
        return {"type": "http.disconnect"}

    scope = _scope("/api/late")
    await _app()(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200]
    assert b"TOO_LATE" not in b"".join(m.get("body", b"") for m in sent)
    assert "unhandled error" in caplog.text


def test_tallys_app_is_the_envelope_around_the_router(settings):
    # No ServerErrorMiddleware outside it, no ExceptionMiddleware inside it.
    app = create_app(settings)
    stack = app.build_middleware_stack()
    assert isinstance(stack, Envelope)
    assert stack.handlers == EXCEPTION_HANDLERS
    assert stack.app is app.router
    assert stack.usage is app.state.usage


async def test_a_failure_sending_the_handlers_answer_is_logged_not_raised(caplog):
    caplog.set_level(logging.ERROR, "tally.http")

    async def send(message: dict) -> None:
        raise OSError("the client has gone")

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = _scope("/api/error")
    app = Envelope(_app().router, 100, 100, handlers=EXCEPTION_HANDLERS)
    await app(scope, receive, send)
    assert "unhandled error in request" in caplog.text
    assert "the client has gone" in caplog.text
