"""An app with tight rate limits, for the rate-limit and business-flow tests.

Skipped, with the reason, while the rate limiter (service.ratelimit) is not
built. Each app gets its own made-up source address, so per-address buckets
(kept in the shared Redis) never carry over between tests.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import Settings

RATE_LIMITING = importlib.util.find_spec("service.ratelimit") is not None
needs_rate_limiting = pytest.mark.skipif(
    not RATE_LIMITING, reason="rate limiting (service.ratelimit) is not built yet"
)


def source_address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


@asynccontextmanager
async def tight_client(settings: Settings, **limits: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app whose limits are `limits` (Settings field overrides)."""
    app = create_app(settings.with_overrides(**limits))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(source_address(), 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


def assert_rate_limited(r: httpx.Response, assert_error: Callable[..., Any]) -> None:
    error = assert_error(r, 429, "RATE_LIMITED")
    retry = r.headers.get("retry-after", "")
    assert retry.isdigit() and int(retry) >= 1, r.headers
    assert error["message"]


def assert_ratelimit_headers(r: httpx.Response) -> tuple[int, int, int]:
    """The RateLimit-Limit/-Remaining/-Reset values (each a non-negative integer)."""
    values = []
    for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        raw = r.headers.get(header, "")
        assert raw.isdigit(), (header, dict(r.headers))
        values.append(int(raw))
    return values[0], values[1], values[2]
