"""Plain ASGI middleware: request ids, body size limits, and the error boundary:
exception handlers for what a route raises, and the last-resort 500."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping

import uuid_utils
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, envelope
from service.logs import REQUEST_ID

log = logging.getLogger("tally.http")

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

_CLIENT_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")
_BATCH_PATHS = ("/api/transfers/batch",)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "PAYLOAD_TOO_LARGE", f"The body exceeds {limit} bytes.", {"limit_bytes": limit}
    )


class RequestContext:
    """Tags every response with X-Request-Id and enforces the body size limit.

    It is the app's error boundary too: an exception that escapes a route
    before its response starts is answered by the handler `handlers` names
    for its class (or a base class), and anything else becomes a 500 in the
    error envelope carrying the request id, never a stack trace. (Tally's app
    leaves out Starlette's own ExceptionMiddleware, which would do the first
    part one layer further in, at the price of another `send` wrapper and
    Request for every request: see service.app.)
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        max_batch_body: int,
        handlers: Mapping[type[Exception], ExceptionHandler] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_batch_body = max_batch_body
        self.handlers = dict(handlers or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
        scope.setdefault("state", {})["request_id"] = request_id_text
        # Every log line written while this request runs carries its id.
        REQUEST_ID.set(request_id_text)
        started = False

        is_api = scope["path"].startswith("/api/")

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", ())]
                if is_api:
                    for name, _ in headers:
                        if name == b"cache-control":
                            break
                    else:
                        headers.append((b"cache-control", b"no-store"))
                    headers += scope["state"].get("ratelimit", ())
                headers.append((b"x-request-id", request_id))
                headers.append((b"x-content-type-options", b"nosniff"))
                message["headers"] = headers
            await send(message)

        limit = self.max_batch_body if scope["path"] in _BATCH_PATHS else self.max_body
        if content_length is not None:
            error = self._check_length(content_length, limit)
            if error is not None:
                await self._reply(send_with_id, error)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except Exception as exc:
            if not started:
                try:
                    answer = await self._handled(scope, limited_receive, exc)
                except Exception:
                    log.exception("exception handler failed in request %s", request_id_text)
                    answer = None
                if answer is not None:
                    try:
                        await answer(scope, limited_receive, send_with_id)
                    except Exception:  # e.g. the client has gone: as for any answer
                        log.exception("unhandled error in request %s", request_id_text)
                    return
            log.exception("unhandled error in request %s", request_id_text)
            if not started:
                await self._reply(
                    send_with_id,
                    ApiError(
                        500,
                        "INTERNAL_ERROR",
                        "Something went wrong on our side.",
                        {"request_id": request_id_text},
                    ),
                )

    async def _handled(self, scope: Scope, receive: Receive, exc: Exception) -> Response | None:
        """The answer of the handler for `exc`'s class (or the nearest base), if any."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return await handler(Request(scope, receive), exc)
        return None

    @staticmethod
    def _check_length(raw: bytes, limit: int) -> ApiError | None:
        if not raw.isdigit() or len(raw) > 18:
            return ApiError(400, "BAD_REQUEST", "Content-Length is not a valid length.")
        if int(raw) > limit:
            return _too_large(limit)
        return None

    @staticmethod
    async def _reply(send: Send, error: ApiError) -> None:
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send(
            {
                "type": "http.response.body",
                "body": envelope(error.code, error.message, error.details),
            }
        )
