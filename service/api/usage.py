"""GET /api/usage: the tenant's API requests per hour and ledger volume per day."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response

from service.api import params
from service.api.routing import Endpoint, QueryParam, json_response
from service.auth import scopes
from service.auth.tokens import Principal
from service.db import usage as sql
from service.errors import validation_error

DEFAULT_SPAN = timedelta(days=1)
MAX_SPAN = timedelta(days=31)
# Ids are generated a moment before created_at is stamped; look this far
# around the period by id, then cut exactly by created_at.
_ID_SLACK = timedelta(hours=1)


class RequestUsage(Struct):
    hour: datetime
    client_id: uuid.UUID
    method: str
    route: str
    status: int
    requests: int


class TransferVolume(Struct):
    day: date
    currency: str
    count: int
    volume: int
    posted_count: int
    posted_volume: int


class Usage(Struct):
    start: datetime
    end: datetime
    requests: list[RequestUsage]
    transfers: list[TransferVolume]


class UsageEnvelope(Struct):
    data: Usage


def _period(request: Request) -> tuple[datetime, datetime]:
    end = params.timestamp(request, "to") or datetime.now(UTC)
    start = params.timestamp(request, "from") or end - DEFAULT_SPAN
    # Well-formed but out of range: 422, like every other rule (400 is malformed).
    if start >= end:
        raise validation_error([{"field": "from", "message": "must be before 'to'"}])
    if end - start > MAX_SPAN:
        raise validation_error(
            [{"field": "to", "message": f"must be at most {MAX_SPAN.days} days after 'from'"}]
        )
    return start.astimezone(UTC), end.astimezone(UTC)


def _uuid7_bound(instant: datetime, upper: bool) -> uuid.UUID:
    ms = max(0, int(instant.timestamp() * 1000))
    return uuid.UUID(int=(ms << 80) | (((1 << 80) - 1) if upper else 0))


async def get_usage(request: Request, principal: Principal) -> Response:
    start, end = _period(request)
    state = request.app.state
    # This worker's counts so far, so a caller sees its own recent requests;
    # other workers' arrive within TALLY_USAGE_FLUSH_SECONDS.
    await state.usage.flush(state.db)
    async with state.db.connection() as conn:
        hourly = await sql.requests_by_hour(conn, principal.tenant_id, start, end)
        daily = await sql.transfers_by_day(
            conn, principal.tenant_id, start, end,
            _uuid7_bound(start - _ID_SLACK, upper=False),
            _uuid7_bound(end + _ID_SLACK, upper=True),
        )  # fmt: skip
    usage = Usage(
        start=start,
        end=end,
        requests=[RequestUsage(*row) for row in hourly],
        # sum() of bigints is numeric in PostgreSQL (it may pass 2^63): exact ints here.
        transfers=[
            TransferVolume(day, currency, count, int(volume), posted, int(posted_volume))
            for day, currency, count, volume, posted, posted_volume in daily
        ],
    )
    return json_response(UsageEnvelope(usage))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/usage",
        get_usage,
        "The tenant's requests per client, route and status per hour, and transfers per"
        " currency per day",
        scope=scopes.ADMIN,
        response=UsageEnvelope,
        query=(
            QueryParam(
                "from",
                {"type": "string", "format": "date-time"},
                "Start of the period (default: 24 h before `to`)",
            ),
            QueryParam(
                "to",
                {"type": "string", "format": "date-time"},
                "End of the period, exclusive (default: now); at most 31 days",
            ),
        ),
        errors=(400, 422, 503),
        tag="operations",
    )
]
