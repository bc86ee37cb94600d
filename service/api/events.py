"""The events feed: a tenant's events in commit order, resumable with `after`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.api import params
from service.api.routing import Endpoint, QueryParam, json_response
from service.auth import scopes
from service.auth.tokens import Principal
from service.db import events as sql
from service.errors import bad_request
from service.schemas import INT64_MAX
from service.webhooks import payload
from service.webhooks.schemas import EVENT_TYPES, EventPage


def _after(request: Request) -> int:
    raw = request.query_params.get("after")
    if raw is None:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > INT64_MAX:
        raise bad_request(
            "Invalid parameter 'after'.",
            [{"field": "after", "message": "must be an event sequence (an integer >= 0)"}],
        )
    return int(raw)


async def list_events(request: Request, principal: Principal) -> Response:
    after = _after(request)
    limit = params.limit(request)
    kind = params.choice(request, "type", EVENT_TYPES)
    async with request.app.state.db.connection() as conn:
        rows = await sql.page(
            conn, principal.tenant_id, after, limit + 1, None if kind is None else [kind]
        )
    has_more = len(rows) > limit
    rows = rows[:limit]
    data = [payload.event(*row) for row in rows]
    last = rows[-1][1] if rows else after
    return json_response(
        {"data": data, "meta": {"limit": limit, "has_more": has_more, "next_cursor": str(last)}}
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/events",
        list_events,
        "The tenant's events in commit order; resume with after=meta.next_cursor",
        scope=scopes.EVENTS_READ,
        response=EventPage,
        query=(
            QueryParam(
                "after",
                {"type": "integer", "minimum": 0, "maximum": INT64_MAX, "default": 0},
                "only events with a greater sequence (meta.next_cursor of the last page)",
            ),
            QueryParam("type", {"type": "string", "enum": list(EVENT_TYPES)}),
            QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
        ),
        errors=(400, 401, 403),
        tag="events",
    ),
]
