"""The one ASGI layer around Tally's router (`Envelope`): request ids, body size
limits, the response headers every answer carries, telemetry, and the error
boundary; and the hot routes it answers without the router (`DirectRoute`)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple

import uuid_utils
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics, watchdog
from service.errors import ApiError, envelope
from service.logs import REQUEST_ID

log = logging.getLogger("tally.http")

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]
Handler = Callable[[Request], Awaitable[Response]]

_CLIENT_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")
_BATCH_PATHS = ("/api/transfers/batch",)
_NO_STORE = (b"cache-control", b"no-store")
_NOSNIFF = (b"x-content-type-options", b"nosniff")


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "PAYLOAD_TOO_LARGE", f"The body exceeds {limit} bytes.", {"limit_bytes": limit}
    )


def _too_slow(seconds: float) -> ApiError:
    # RFC 9110 15.5.9: a 408 closes the connection (whatever is left of the
    # body must not be read as the next request).
    return ApiError(
        408,
        "REQUEST_TIMEOUT",
        f"The body did not arrive within {seconds:g} s.",
        {"timeout_seconds": seconds},
        headers={"Connection": "close"},
    )


class DirectRoute(NamedTuple):
    """A route the Envelope answers itself, for one method: the same handler
    the router would call, without the router's search through every route,
    its route and endpoint wrappers, or Starlette's Response.__call__. The
    scope gets what the router would give it (router, route, endpoint,
    path_params), so neither the handler, nor the error handlers, nor the
    route's metrics label can tell the difference."""

    method: str
    route: Route
    handler: Handler
    label: str  # the route's metrics label: its template


class Envelope:
    """The layer around the router (service.app composes it). For every HTTP request:

    - its id: the client's X-Request-Id when usable, else a new one, in the
      scope's state, in the log context (service.logs) and on the response;
    - the body size limit (the batch route's is larger): 413, or 400 for a
      Content-Length that is not a length; and the body's deadline: 408 when
      all of it has not arrived `body_timeout` seconds after the route first
      asked for it (granian bounds the wait for the headers, not the body);
    - on every response X-Request-Id and X-Content-Type-Options: nosniff, and
      on /api/ responses Cache-Control: no-store (unless the route set its
      own) and the RateLimit-* headers the rate limiter left in the state;
    - the error boundary: an exception that escapes a route before its
      response starts is answered by the handler `handlers` names for its
      class (or a base class), anything else by a 500 in the error envelope
      carrying the request id, never a stack trace; after the start, it is
      logged;
    - telemetry: the in-flight gauge, the latency histogram by method, route
      template and final status, and (with `usage`) the client's usage
      counts, `usage.record(state, method, route, status)`.

    One layer instead of Starlette's ServerErrorMiddleware, ExceptionMiddleware
    and a middleware per job, each of which wraps `send` again for every
    request. A request without a body that matches a route in `direct` skips
    the router as well.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        max_batch_body: int,
        handlers: Mapping[type[Exception], ExceptionHandler] | None = None,
        usage: Any = None,
        direct: Iterable[DirectRoute] = (),
        body_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_batch_body = max_batch_body
        self.body_timeout = body_timeout
        self.handlers = dict(handlers or {})
        self.usage = usage
        self.direct: dict[str, tuple[DirectRoute, ...]] = {}
        for route in direct:
            self.direct[route.method] = (*self.direct.get(route.method, ()), route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        metrics.request_started()
        request_id = b""
        content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _CLIENT_ID.match(value):
                request_id = value
            elif name == b"content-length":
                content_length = value
        if not request_id:
            # uuid_utils: no system call for the random bits (uuid.uuid4 makes one).
            request_id = uuid_utils.uuid4().hex.encode()
        request_id_text = request_id.decode()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id_text
        # Every log line written while this request runs carries its id.
        REQUEST_ID.set(request_id_text)
        path = scope["path"]
        limit = self.max_batch_body if path in _BATCH_PATHS else self.max_body
        responder = _Responder(send, path.startswith("/api/"), state, request_id)
        receive = _LimitedReceive(receive, limit, self.body_timeout)
        direct = None
        if content_length is None:
            routes = self.direct.get(scope["method"])
            if routes is not None and not scope.get("root_path"):
                direct = _match(routes, scope, path, self.app)
        try:
            try:
                if direct is not None:
                    await self._answer_directly(direct.handler, scope, receive, responder)
                elif content_length is not None and (error := _check_length(content_length, limit)):
                    await _reply(responder, error)
                else:
                    await self.app(scope, receive, responder)
            except Exception as exc:
                await self._recover(exc, scope, receive, responder, request_id_text)
        except Exception:
            # Sending an answer failed (the client has gone): nothing more to send.
            log.exception("unhandled error in request %s", request_id_text)
        finally:
            label = direct.label if direct is not None else metrics.route_label(scope)
            method = scope["method"]
            status = responder.status
            metrics.request_finished(method, label, status, time.perf_counter() - started_at)
            if self.usage is not None:
                self.usage.record(state, method, label, status)

    @staticmethod
    async def _answer_directly(
        handler: Handler, scope: Scope, receive: Receive, responder: _Responder
    ) -> None:
        response = await handler(Request(scope, receive, responder))
        if response.background is not None or type(response).__call__ is not _PLAIN:
            await response(scope, receive, responder)
            return
        # What Response.__call__ sends, with the Envelope's headers added: what
        # the responder does, inline (through it, in-process GET 23.6-24.3 ->
        # 24.5-24.8 us in alternating runs).
        responder.started = True
        responder.status = status = response.status_code
        headers = _decorated(response.raw_headers, responder.is_api, responder.state,
                             responder.request_id)  # fmt: skip
        send = responder.send
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _recover(
        self, exc: Exception, scope: Scope, receive: Receive, responder: _Responder,
        request_id: str,
    ) -> None:  # fmt: skip
        """The error boundary: `exc` escaped the route (see the class)."""
        if not responder.started:
            answer = await self._handled(scope, receive, exc, request_id)
            if answer is not None:
                try:
                    await answer(scope, receive, responder)
                except Exception:  # e.g. the client has gone: as for any answer
                    log.exception("unhandled error in request %s", request_id)
                return
        log.exception("unhandled error in request %s", request_id)
        if not responder.started:
            await _reply(responder, _internal_error(request_id))

    async def _handled(
        self, scope: Scope, receive: Receive, exc: Exception, request_id: str
    ) -> Response | None:
        """The answer of the handler for `exc`'s class (or the nearest base), if any."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                try:
                    return await handler(Request(scope, receive), exc)
                except Exception:
                    log.exception("exception handler failed in request %s", request_id)
                    return None
        return None


class _Responder:
    """The `send` a route gets: notes the status, adds the Envelope's headers."""

    __slots__ = ("is_api", "request_id", "send", "started", "state", "status")

    def __init__(self, send: Send, is_api: bool, state: dict[str, Any], request_id: bytes):
        self.send = send
        self.is_api = is_api
        self.state = state
        self.request_id = request_id
        self.started = False
        self.status = 500  # until a response starts

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            message["headers"] = _decorated(message.get("headers", ()), self.is_api, self.state,
                                            self.request_id)  # fmt: skip
        await self.send(message)


class _LimitedReceive:
    """The `receive` a route gets: 413 once the body grows past `limit`, 408
    when the whole body has not arrived `timeout` seconds after the first
    call. Once it has, receive waits as long as it must (for a disconnect)."""

    __slots__ = ("deadline", "limit", "receive", "received", "timeout")

    def __init__(self, receive: Receive, limit: int, timeout: float) -> None:
        self.receive = receive
        self.limit = limit
        self.received = 0
        self.timeout = timeout
        self.deadline = 0.0  # time.monotonic(), from the first call; -1: the body is in

    async def __call__(self) -> Message:
        if self.deadline < 0:
            return await self.receive()
        if not self.deadline:
            self.deadline = time.monotonic() + self.timeout
        try:
            # Not asyncio.timeout: its timer costs 8 µs a read (service.watchdog).
            message = await watchdog.wait_until(self.deadline, self.receive())
        except watchdog.Expired:
            raise _too_slow(self.timeout) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise _too_large(self.limit)
            if not message.get("more_body", False):
                self.deadline = -1.0
        else:
            self.deadline = -1.0
        return message


def _match(
    routes: tuple[DirectRoute, ...], scope: Scope, path: str, router: ASGIApp
) -> DirectRoute | None:
    """The direct route `path` matches, with the scope set up as the router
    sets it up (see DirectRoute); None: the router decides."""
    for direct in routes:
        route = direct.route
        match = route.path_regex.match(path)
        if match is not None:
            convertors = route.param_convertors
            params = {}
            for name, value in match.groupdict().items():
                params[name] = convertors[name].convert(value)
            scope["router"] = router
            scope["route"] = route
            scope["endpoint"] = route.endpoint
            scope["path_params"] = params
            return direct
    return None


_PLAIN = Response.__call__


def _decorated(
    headers: Iterable[tuple[bytes, bytes]], is_api: bool, state: dict[str, Any], request_id: bytes
) -> list[tuple[bytes, bytes]]:
    """A response's headers with the ones every answer carries (see Envelope)."""
    out = [*headers]
    if is_api:
        for name, _ in out:
            if name == b"cache-control":
                break
        else:
            out.append(_NO_STORE)
        out += state.get("ratelimit", ())
    out.append((b"x-request-id", request_id))
    out.append(_NOSNIFF)
    return out


def _check_length(raw: bytes, limit: int) -> ApiError | None:
    if not raw.isdigit() or len(raw) > 18:
        return ApiError(400, "BAD_REQUEST", "Content-Length is not a valid length.")
    if int(raw) > limit:
        return _too_large(limit)
    return None


def _internal_error(request_id: str) -> ApiError:
    return ApiError(
        500, "INTERNAL_ERROR", "Something went wrong on our side.", {"request_id": request_id}
    )


async def _reply(send: Send, error: ApiError) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": envelope(error.code, error.message,
                                                               error.details)})  # fmt: skip
