"""The error envelope and the map from exceptions to responses.

Every non-2xx response the service sends is built here:
`{"error": {"code": "...", "message": "...", "details": {...}}}`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.db.pool import DatabaseUnavailable
from service.ledger.errors import LedgerError
from service.ratelimit import RateLimiterUnavailable

_encode = msgspec.json.Encoder().encode

# Default code for a bare HTTP status (routing errors raised by Starlette).
_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    412: "VERSION_MISMATCH",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(Exception):
    """An error the client should see, with its HTTP status and stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def field_error(status: int, code: str, fields: list[dict[str, str]], message: str) -> ApiError:
    return ApiError(status, code, message, {"fields": fields})


def bad_request(message: str, fields: list[dict[str, str]] | None = None) -> ApiError:
    return ApiError(400, "BAD_REQUEST", message, {"fields": fields} if fields else None)


def validation_error(fields: list[dict[str, str]]) -> ApiError:
    return field_error(422, "VALIDATION_ERROR", fields, "The request breaks a validation rule.")


def not_found(what: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"No such {what}.")


def unauthenticated(message: str = "A valid bearer token is required.") -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(scope: str) -> ApiError:
    return ApiError(
        403, "FORBIDDEN", f"The token lacks the scope {scope!r}.", {"required_scope": scope}
    )


def service_unavailable(retry_after: int, what: str = "the database") -> ApiError:
    return ApiError(
        503,
        "SERVICE_UNAVAILABLE",
        f"The service cannot reach {what}; retry shortly.",
        headers={"Retry-After": str(retry_after)},
    )


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    return _encode({"error": {"code": code, "message": message, "details": details or {}}})


def error_response(exc: ApiError) -> Response:
    return Response(
        envelope(exc.code, exc.message, exc.details),
        status_code=exc.status,
        headers=exc.headers,
        media_type="application/json",
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route, wrong method) in our envelope."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _STATUS_CODES.get(status, "ERROR")
    if status == 404:
        message = f"No route matches {request.method} {request.url.path}."
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    return Response(
        envelope(code, message),
        status_code=status,
        headers=dict(exc.headers or {}),
        media_type="application/json",
    )


# Ledger rule codes that are not plain 422s.
_LEDGER_STATUS = {
    "NOT_FOUND": 404,
    "VERSION_MISMATCH": 412,
    "ACCOUNT_NOT_EMPTY": 409,
    "ACCOUNT_CLOSED": 409,
}


async def handle_ledger_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LedgerError)
    details = {"fields": [{"field": exc.field, "message": exc.message}]} if exc.field else None
    status = _LEDGER_STATUS.get(exc.code, 422)
    return error_response(ApiError(status, exc.code, exc.message, details))


async def handle_db_unavailable(request: Request, exc: Exception) -> Response:
    retry = request.app.state.settings.retry_after_seconds
    return error_response(service_unavailable(retry))


async def handle_limiter_unavailable(request: Request, exc: Exception) -> Response:
    retry = request.app.state.settings.retry_after_seconds
    return error_response(service_unavailable(retry, "the rate limiter (Redis)"))


EXCEPTION_HANDLERS = {
    RateLimiterUnavailable: handle_limiter_unavailable,
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    LedgerError: handle_ledger_error,
    DatabaseUnavailable: handle_db_unavailable,
}
