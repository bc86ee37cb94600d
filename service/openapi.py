"""The OpenAPI 3.1 document, generated from the route table and the msgspec Structs."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from service.api.routing import Endpoint
from service.schemas import ErrorEnvelope

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_REASONS = {
    400: "Malformed request",
    401: "Missing, invalid or expired token",
    403: "Missing scope",
    404: "Not found",
    408: "The body did not arrive within TALLY_BODY_TIMEOUT_SECONDS",
    409: "Conflict",
    412: "If-Match does not match the current version",
    413: "Body too large",
    415: "Unsupported content type",
    422: "Breaks a rule",
    429: "Rate limited",
    503: "Dependency unavailable",
}


def build(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    types = {t for ep in endpoints for t in (ep.body, ep.response) if t is not None}
    types |= {t for ep in endpoints for t in ep.also.values()}
    types.add(ErrorEnvelope)
    ordered = sorted(types, key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tally ledger API", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: the same key (per API client) with the same request"
        " answers the first answer again, with Idempotent-Replayed: true; with another"
        " request, 409 IDEMPOTENCY_KEY_REUSED; while the first still runs, 409"
        " IDEMPOTENCY_KEY_IN_USE. Kept at least 24 h. Given at most once (twice: 400)."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}


_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": (
        'Optimistic locking: the ETag of the version the change is meant for, e.g. "3"'
        ' (a list of them, or *, as RFC 9110 allows; W/"3" counts as "3"). Another'
        " current version, or a tag that is not one the ETag header sends, is 412"
        " VERSION_MISMATCH and changes nothing."
    ),
    "schema": {"type": "string"},
}


def _operation(ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": ep.handler.__name__,
        "summary": ep.summary,
        "tags": [ep.tag],
    }
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name in _PATH_PARAM.findall(ep.path)
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "schema": q.schema,
            **({"description": q.description} if q.description else {}),
        }
        for q in ep.query
    ]
    if ep.idempotent:
        parameters.append(_IDEMPOTENCY_KEY)
    if 412 in ep.errors:
        parameters.append(_IF_MATCH)
    if parameters:
        op["parameters"] = parameters
    if ep.body is not None:
        op["requestBody"] = {
            "required": ep.body_required,
            "content": {"application/json": {"schema": _ref(ep.body)}},
        }
    ok: dict[str, Any] = {"description": "Success"}
    if ep.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(ep.response)}}
    responses: dict[str, Any] = {str(ep.status): ok}
    for status, kind in ep.also.items():
        responses[str(status)] = {
            "description": "Success",
            "content": {"application/json": {"schema": _ref(kind)}},
        }
    errors = set(ep.errors) | ({400, 409} if ep.idempotent else set())
    if ep.path.startswith("/api/"):
        errors.add(400)  # every /api/ operation refuses an undeclared query parameter
    if ep.scope:
        op["security"] = [{"bearer": [ep.scope]}]
        errors |= {401, 403}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _REASONS.get(status, "Error"),
            "content": {"application/json": {"schema": _ref(ErrorEnvelope)}},
        }
    op["responses"] = responses
    return op
