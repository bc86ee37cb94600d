"""Webhook endpoints: register (the secret is shown once), list, read, change, rotate
the signing secret, delete, and each endpoint's deliveries with their attempt history."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from service.api import params
from service.api.decoding import decode_body, decode_optional_body
from service.api.routing import (
    Endpoint,
    QueryParam,
    json_response,
    page_response,
)
from service.auth import scopes
from service.auth.tokens import Principal
from service.db import webhooks as sql
from service.errors import ApiError, not_found, validation_error
from service.webhooks import endpoints
from service.webhooks.schemas import (
    DeliveryPage,
    SecretRotation,
    WebhookCreate,
    WebhookCreatedEnvelope,
    WebhookEnvelope,
    WebhookPage,
    WebhookPatch,
)
from service.webhooks.ssrf import UnsafeUrl

_DELIVERY_STATUSES = ("pending", "delivered", "failed")
_WHAT = "webhook endpoint"


def _unsafe(exc: UnsafeUrl) -> ApiError:
    return validation_error([{"field": "url", "message": str(exc)}])


def _render(request: Request, row: tuple) -> dict:
    return endpoints.to_dict(row, request.app.state.settings.webhook_breaker_threshold)


async def create_webhook(request: Request, principal: Principal) -> Response:
    spec = await decode_body(request, WebhookCreate)
    state = request.app.state
    try:
        row, secret = await endpoints.create(
            state.db, state.vault, principal.tenant_id, spec, state.settings.webhook_allow_private
        )
    except UnsafeUrl as exc:
        raise _unsafe(exc) from None
    return json_response({"data": {**_render(request, row), "secret": secret}}, 201)


async def list_webhooks(request: Request, principal: Principal) -> Response:
    limit = params.limit(request)
    before = params.cursor(request)
    async with request.app.state.db.connection() as conn:
        rows = await sql.list_endpoints(conn, principal.tenant_id, limit + 1, before)
    has_more = len(rows) > limit
    rows = rows[:limit]
    data = [_render(request, r) for r in rows]
    return page_response(data, limit, rows[-1][0] if has_more else None)


async def get_webhook(request: Request, principal: Principal) -> Response:
    endpoint_id = params.path_id(request)
    try:
        row = await endpoints.get(request.app.state.db, principal.tenant_id, endpoint_id)
    except endpoints.EndpointNotFound:
        raise not_found(_WHAT) from None
    return json_response({"data": _render(request, row)})


async def patch_webhook(request: Request, principal: Principal) -> Response:
    endpoint_id = params.path_id(request)
    patch = await decode_body(request, WebhookPatch)
    state = request.app.state
    try:
        row = await endpoints.update(
            state.db,
            principal.tenant_id,
            endpoint_id,
            patch,
            state.settings.webhook_allow_private,
        )
    except endpoints.EndpointNotFound:
        raise not_found(_WHAT) from None
    except UnsafeUrl as exc:
        raise _unsafe(exc) from None
    return json_response({"data": _render(request, row)})


async def rotate_webhook_secret(request: Request, principal: Principal) -> Response:
    endpoint_id = params.path_id(request)
    body = await decode_optional_body(request, SecretRotation)
    state = request.app.state
    try:
        row, secret = await endpoints.rotate_secret(
            state.db, state.vault, principal.tenant_id, endpoint_id,
            body.previous_secret_ttl_seconds,
        )  # fmt: skip
    except endpoints.EndpointNotFound:
        raise not_found(_WHAT) from None
    return json_response({"data": {**_render(request, row), "secret": secret}})


async def delete_webhook(request: Request, principal: Principal) -> Response:
    endpoint_id = params.path_id(request)
    try:
        await endpoints.delete(request.app.state.db, principal.tenant_id, endpoint_id)
    except endpoints.EndpointNotFound:
        raise not_found(_WHAT) from None
    return Response(status_code=204)


async def list_deliveries(request: Request, principal: Principal) -> Response:
    endpoint_id = params.path_id(request)
    limit = params.limit(request)
    before = params.int_cursor(request)
    status = params.choice(request, "status", _DELIVERY_STATUSES)
    db = request.app.state.db
    async with db.connection() as conn:
        if await sql.get_endpoint(conn, principal.tenant_id, endpoint_id) is None:
            raise not_found(_WHAT)
        rows = await sql.list_deliveries(
            conn, principal.tenant_id, endpoint_id, limit + 1, before, status
        )
    has_more = len(rows) > limit
    rows = rows[:limit]
    data = [endpoints.delivery_to_dict(r) for r in rows]
    # Deliveries are listed by event sequence; the cursor carries the last one.
    return page_response(data, limit, uuid.UUID(int=rows[-1][3]) if has_more else None)


_LIMIT = QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50})

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/webhooks",
        create_webhook,
        "Register a webhook endpoint (the signing secret is returned once)",
        scope=scopes.WEBHOOKS_MANAGE,
        body=WebhookCreate,
        response=WebhookCreatedEnvelope,
        status=201,
        errors=(400, 401, 403, 408, 413, 415, 422),
        tag="webhooks",
    ),
    Endpoint(
        "GET",
        "/api/webhooks",
        list_webhooks,
        "List webhook endpoints, newest first",
        scope=scopes.WEBHOOKS_MANAGE,
        response=WebhookPage,
        query=(_LIMIT, QueryParam("cursor", params.CURSOR_SCHEMA, "next_cursor of the last page")),
        errors=(400, 401, 403),
        tag="webhooks",
    ),
    Endpoint(
        "GET",
        "/api/webhooks/{id}",
        get_webhook,
        "One webhook endpoint, with its circuit breaker state",
        scope=scopes.WEBHOOKS_MANAGE,
        response=WebhookEnvelope,
        errors=(400, 401, 403, 404),
        tag="webhooks",
    ),
    Endpoint(
        "PATCH",
        "/api/webhooks/{id}",
        patch_webhook,
        "Change url, events or description; pause, or resume (status enabled)",
        scope=scopes.WEBHOOKS_MANAGE,
        body=WebhookPatch,
        response=WebhookEnvelope,
        errors=(400, 401, 403, 404, 408, 413, 415, 422),
        tag="webhooks",
    ),
    Endpoint(
        "POST",
        "/api/webhooks/{id}/rotate-secret",
        rotate_webhook_secret,
        "Replace the signing secret (shown once); the old one also signs for a grace period",
        scope=scopes.WEBHOOKS_MANAGE,
        body=SecretRotation,
        body_required=False,
        response=WebhookCreatedEnvelope,
        errors=(400, 401, 403, 404, 408, 413, 415, 422),
        tag="webhooks",
    ),
    Endpoint(
        "DELETE",
        "/api/webhooks/{id}",
        delete_webhook,
        "Delete a webhook endpoint and its deliveries",
        scope=scopes.WEBHOOKS_MANAGE,
        status=204,
        errors=(400, 401, 403, 404),
        tag="webhooks",
    ),
    Endpoint(
        "GET",
        "/api/webhooks/{id}/deliveries",
        list_deliveries,
        "An endpoint's deliveries, newest event first, with every attempt",
        scope=scopes.WEBHOOKS_MANAGE,
        response=DeliveryPage,
        query=(
            _LIMIT,
            QueryParam("cursor", params.ENTRY_CURSOR_SCHEMA, "next_cursor of the last page"),
            QueryParam("status", {"type": "string", "enum": list(_DELIVERY_STATUSES)}),
        ),
        errors=(400, 401, 403, 404),
        tag="webhooks",
    ),
]
