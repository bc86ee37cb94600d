"""Operations: liveness, readiness (PostgreSQL and Redis), metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from service import metrics as prometheus
from service.api.routing import Endpoint, json_response
from service.db.pool import DatabaseUnavailable
from service.schemas import Health


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def _check_db(request: Request) -> str:
    try:
        async with request.app.state.db.connection() as conn:
            await conn.execute("SELECT 1")
    except DatabaseUnavailable:
        return "down"
    return "ok"


async def _check_redis(request: Request) -> str:
    settings = request.app.state.settings
    try:
        await asyncio.wait_for(request.app.state.redis.ping(), settings.redis_timeout_seconds)
    except Exception:  # any failure to answer PING means not ready
        return "down"
    return "ok"


async def readyz(request: Request) -> Response:
    db, redis = await asyncio.gather(_check_db(request), _check_redis(request))
    checks = {"postgres": db, "redis": redis}
    if db == "ok" and redis == "ok":
        return json_response({"status": "ok", "checks": checks})
    retry = str(request.app.state.settings.retry_after_seconds)
    return json_response(
        {
            "error": {
                "code": "SERVICE_UNAVAILABLE",
                "message": "A dependency is down.",
                "details": {"checks": checks},
            }
        },
        503,
        {"Retry-After": retry},
    )


async def metrics(request: Request) -> Response:
    expected = request.app.state.settings.metrics_token
    if expected and not prometheus.token_matches(expected, request.headers.get("authorization")):
        return json_response(
            {"error": {"code": "UNAUTHENTICATED", "message": "The metrics token is required.",
                       "details": {}}},
            401,
            {"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    body, media_type = prometheus.metrics_response_body()
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


ENDPOINTS = [
    Endpoint("GET", "/healthz", healthz, "Liveness", response=Health, tag="operations"),
    Endpoint(
        "GET",
        "/readyz",
        readyz,
        "Readiness: PostgreSQL and Redis answer",
        response=Health,
        errors=(503,),
        tag="operations",
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics of every worker (Bearer TALLY_METRICS_TOKEN when set)",
        errors=(401,),
        tag="operations",
    ),
    Endpoint("GET", "/openapi.json", openapi, "This OpenAPI 3.1 document", tag="operations"),
]
