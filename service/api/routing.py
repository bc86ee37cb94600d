"""The route table: one `Endpoint` per operation drives both routing and OpenAPI."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fastpath import codec
from service.auth.tokens import InvalidToken, Principal, UnknownSigningKey
from service.errors import ApiError, forbidden, unauthenticated
from service.middleware import DirectRoute

_encode = msgspec.json.Encoder().encode

Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    scope: str | None = None  # None: no bearer token needed
    body: type | None = None
    # False: the body may be left out (the handler reads it with decode_optional_body).
    body_required: bool = True
    # True: the handler honours Idempotency-Key (service.api.idempotency).
    idempotent: bool = False
    response: type | None = None
    status: int = 200
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = field(default=())
    tag: str = "ledger"
    # Other success answers, e.g. {200: BatchResults} for a non-atomic batch.
    also: dict[int, type] = field(default_factory=dict)


class JsonBody(Response):
    """An encoded JSON body, answered with the headers Starlette's Response
    would send, in the same order, built directly: its init_headers looks the
    headers over again for every response (about 1 us). Not for 1xx, 204 or
    304, which carry no body and so no Content-Length; `headers` never name
    Content-Length or Content-Type, which it sets itself."""

    media_type = "application/json"

    def __init__(
        self, body: bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        raw = []
        if headers:
            for name, value in headers.items():
                raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        raw.append((b"content-length", b"%d" % len(body)))
        raw.append(_JSON_TYPE)
        self.raw_headers = raw


_JSON_TYPE = (b"content-type", b"application/json")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JsonBody(_encode(data), status, headers)


def page_response(data: list[Any], limit: int, last_id: uuid.UUID | None) -> Response:
    """A list page; `last_id` (the last item's id when more follow) becomes the cursor."""
    next_cursor = codec.encode_cursor(last_id) if last_id is not None else None
    meta = {"limit": limit, "has_more": last_id is not None, "next_cursor": next_cursor}
    return json_response({"data": data, "meta": meta})


def _header(request: Request, name: bytes) -> str | None:
    """The first `name` header, as `request.headers.get` gives it, without building
    the Headers object (lowercase `name`)."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for another scheme."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if token and scheme.lower() == "bearer" else None


async def principal_of(request: Request) -> Principal:
    """Verify the bearer token on `request` (401 on any failure)."""
    header = _header(request, b"authorization")
    if not header:
        raise unauthenticated()
    token = _bearer(header)
    if token is None:
        raise unauthenticated("Use the Authorization: Bearer <token> scheme.")
    tokens = request.app.state.tokens
    try:
        try:
            return tokens.verify(token)  # a known token: no coroutine to run
        except UnknownSigningKey:
            return await tokens.verify_async(token)
    except InvalidToken:
        raise unauthenticated("The token is invalid or expired.") from None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def limit(request: Request, bucket: str, rate: float, burst: int) -> None:
    """Take a token from `bucket`; 429 RATE_LIMITED when it is empty.

    The RateLimit-* headers go on the response whatever it turns out to be.
    """
    limiter = request.app.state.limiter
    decision = limiter.take_leased(bucket, rate, burst) or await limiter.take(bucket, rate, burst)
    request.scope.setdefault("state", {})["ratelimit"] = decision.headers()
    if not decision.allowed:
        raise ApiError(
            429, "RATE_LIMITED", "Too many requests; slow down.",
            {"retry_after_seconds": decision.retry_after},
            headers={"Retry-After": str(decision.retry_after)},
        )  # fmt: skip


async def authorize(request: Request, scope: str) -> Principal:
    """Token, client status, rate limit, then scope (in that order)."""
    state = request.app.state
    try:
        principal = await principal_of(request)
        # Usage is counted per client: the Envelope reads this.
        request.scope.setdefault("state", {})["principal"] = principal
    except ApiError:
        # Unauthenticated callers share a bucket per source address, so
        # guessing tokens is throttled too.
        settings = state.settings
        await limit(request, f"ip:{client_address(request)}", settings.auth_rate_limit * 10,
                    settings.auth_rate_burst * 10)  # fmt: skip
        raise
    clients = state.clients
    policy = clients.cached(principal.client_id) or await clients.policy(principal.client_id)
    if not policy.active:
        raise unauthenticated("The client of this token has been revoked.")
    await limit(request, f"client:{principal.client_id}", policy.rate, policy.burst)
    if scope not in principal.scopes:
        raise forbidden(scope)
    return principal


def _authorized_now(request: Request, scope: str) -> Principal | None:
    """What `authorize` returns when it needs no I/O and lets the request
    through: a token verified before, its client's policy cached and active,
    a token of the client's bucket leased to this worker, and the scope held.
    Otherwise None, with nothing taken or changed: `authorize` then takes the
    same steps in the same order and answers every case."""
    header = _header(request, b"authorization")
    token = _bearer(header) if header else None
    if token is None:
        return None
    state = request.app.state
    principal = state.tokens.cached(token)
    if principal is None or scope not in principal.scopes:
        return None
    client_id = principal.client_id
    policy = state.clients.cached(client_id)
    if policy is None or not policy.active:
        return None
    decision = state.limiter.take_leased(f"client:{client_id}", policy.rate, policy.burst)
    if decision is None:
        return None
    request_state = request.scope.setdefault("state", {})
    request_state["principal"] = principal
    request_state["ratelimit"] = decision.headers()
    return principal


def _guard(
    handler: Handler, scope: str, query: tuple[str, ...]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        principal = _authorized_now(request, scope) or await authorize(request, scope)
        if request.scope["query_string"]:
            reject_unknown_query(request, query)
        return await handler(request, principal)

    endpoint.__name__ = handler.__name__
    return endpoint


def _query_checked(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An unauthenticated /api/ operation (the token endpoint), which takes no
    query parameter: credentials in a URL end up in logs (RFC 6749 2.3.1)."""

    async def endpoint(request: Request) -> Response:
        if request.scope["query_string"]:
            reject_unknown_query(request, ())
        return await handler(request)

    endpoint.__name__ = handler.__name__
    return endpoint


def build_routes(endpoints: list[Endpoint], first: tuple[str, ...] = ()) -> list[Route]:
    """One Route per path, dispatching on method, so a 405 lists every allowed method.

    The paths in `first` come first, in that order, and then the rest in the
    endpoints' order. Starlette tries routes one by one, a regex each, so the
    busiest paths go first; no two paths match the same URL (the object_id
    convertor below sees to it), so the order changes nothing else.
    """
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, {})[ep.method] = _guarded(ep)
    unknown = set(first) - set(by_path)
    if unknown:
        raise ValueError(f"no endpoint has the path {sorted(unknown)}")
    paths = [*first, *(p for p in by_path if p not in first)]
    return [
        Route(
            _route_path(path),
            _Endpoint(_dispatch(by_path[path])),
            methods=list(by_path[path]),
        )
        for path in paths
    ]


def direct_routes(
    endpoints: list[Endpoint], routes: list[Route], names: tuple[str, ...]
) -> list[DirectRoute]:
    """The Envelope's DirectRoutes for `names` ("METHOD /path/{id}"): each with
    its path's Route from `routes` (build_routes') and the same handler that
    Route dispatches the method to."""
    by_name = {f"{ep.method} {ep.path}": ep for ep in endpoints}
    by_path = {route.path: route for route in routes}
    made = []
    for name in names:
        ep = by_name.get(name)
        route = by_path.get(_route_path(ep.path)) if ep is not None else None
        if ep is None or route is None:
            raise ValueError(f"no route serves {name}")
        made.append(DirectRoute(ep.method, route, _guarded(ep), ep.path))
    return made


def _route_path(path: str) -> str:
    """An endpoint's path as its Route's: every parameter an object_id."""
    return _ID.sub(r"{\1:object_id}", path)


def _guarded(ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """The handler behind its checks. Every /api/ operation refuses a query
    parameter it does not declare in `ep.query` (so the OpenAPI document and
    the check cannot disagree), after authorization: `POST
    /api/transfers?dry_run=true` must not move money. The operational routes
    (/healthz, /metrics, ...) ignore their query string, as probes expect."""
    if ep.scope is not None:
        return _guard(ep.handler, ep.scope, tuple(q.name for q in ep.query))
    if ep.path.startswith("/api/"):
        if ep.query:
            raise ValueError(f"{ep.method} {ep.path}: no check for its query parameters")
        return _query_checked(ep.handler)
    return ep.handler


class _Endpoint:
    """A handler as its route's ASGI app: Starlette's `request_response`
    without its own exception wrapper. That wrapper wraps `send` once more
    for every request (about 1.5 us) to do what the app's error boundary
    (the Envelope, service.middleware) does anyway: an exception raised
    before the response starts goes to the app's exception handlers, and
    after, on up.

    A class, not a function: Starlette's Route takes a function for
    `request_response` and any other callable as an ASGI app."""

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)


class _ObjectId(Convertor[str]):
    """A path segment naming an object: never a sibling route's literal ("batch")."""

    regex = r"(?!batch$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("object_id", _ObjectId())
_ID = re.compile(r"{(\w+)}")


def _dispatch(
    methods: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    if len(methods) == 1:
        return next(iter(methods.values()))
    table = dict(methods)
    if "GET" in table:
        table.setdefault("HEAD", table["GET"])

    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return dispatch


def reject_unknown_query(request: Request, allowed: tuple[str, ...]) -> None:
    """400 for a parameter the route does not know, or one given more than once
    (`?account_id=A&account_id=B` would otherwise filter by B alone, silently)."""
    query = request.query_params
    unknown = [k for k in query if k not in allowed]
    if unknown:
        raise ApiError(
            400,
            "BAD_REQUEST",
            "Unknown query parameter.",
            {"fields": [{"field": k, "message": "is not a known parameter"} for k in unknown]},
        )
    if len(query.multi_items()) > len(query):
        repeated = [k for k in query if len(query.getlist(k)) > 1]
        raise ApiError(
            400,
            "BAD_REQUEST",
            "Repeated query parameter.",
            {"fields": [{"field": k, "message": "is given more than once"} for k in repeated]},
        )
