"""The route table: the busiest paths are tried first, and the order changes nothing else;
each route hands its handler's response the router's own `send`."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api.routing import Endpoint, JsonBody, _header, build_routes, json_response
from service.app import BUSIEST_PATHS, ENDPOINTS
from service.errors import EXCEPTION_HANDLERS, ApiError

_PARAM = re.compile(r"{\w+(?::\w+)?}")


def _template(route: Route) -> str:
    return re.sub(r"{(\w+):\w+}", r"{\1}", route.path)


def _sample_urls(routes: list[Route]) -> set[str]:
    """Each route's path with its parameters filled in every way that could
    collide: an id, and every literal segment of any route ("batch", "post"...)."""
    literals = {seg for r in routes for seg in r.path.split("/") if seg and "{" not in seg}
    values = [str(uuid.uuid4()), *sorted(literals)]
    urls = set()
    for route in routes:
        holes = len(_PARAM.findall(route.path))
        for filling in itertools.product(values, repeat=holes):
            pieces = _PARAM.split(route.path)
            urls.add(
                "".join(itertools.chain.from_iterable(zip(pieces, [*filling, ""], strict=True)))
            )
    return urls


def test_the_busiest_paths_are_tried_first():
    routes = build_routes(ENDPOINTS, first=BUSIEST_PATHS)
    assert [_template(r) for r in routes[: len(BUSIEST_PATHS)]] == list(BUSIEST_PATHS)
    # Every other path is still there, once, in the endpoints' order.
    rest = [_template(r) for r in routes[len(BUSIEST_PATHS) :]]
    expected = list(dict.fromkeys(ep.path for ep in ENDPOINTS if ep.path not in BUSIEST_PATHS))
    assert rest == expected


def test_the_app_serves_that_order(app):
    served = [_template(r) for r in app.routes if isinstance(r, Route)]
    assert served[: len(BUSIEST_PATHS)] == list(BUSIEST_PATHS)


def test_no_url_matches_two_routes_so_order_cannot_matter():
    routes = build_routes(ENDPOINTS)
    urls = _sample_urls(routes)
    assert "/api/transfers/batch" in urls and len(urls) > 100
    for url in urls:
        matching = [r.path for r in routes if r.path_regex.match(url)]
        assert len(matching) <= 1, (url, matching)


def test_reordered_routes_resolve_every_url_the_same_way():
    plain = build_routes(ENDPOINTS)
    busiest_first = build_routes(ENDPOINTS, first=BUSIEST_PATHS)

    def resolve(routes: list[Route], url: str) -> str | None:
        return next((r.path for r in routes if r.path_regex.match(url)), None)

    for url in _sample_urls(plain):
        assert resolve(busiest_first, url) == resolve(plain, url), url


def test_a_first_path_without_an_endpoint_is_refused():
    with pytest.raises(ValueError, match="/api/nowhere"):
        build_routes(ENDPOINTS, first=("/api/accounts/{id}", "/api/nowhere"))


@pytest.mark.parametrize("status", [200, 201, 202, 400, 409, 422])
@pytest.mark.parametrize(
    "headers",
    [None, {}, {"ETag": '"7"'}, {"Idempotent-Replayed": "true", "Cache-Control": "no-store"}],
)
def test_json_body_sends_what_starlettes_response_sends(status, headers):
    body = b'{"data":{"id":"x","name":"caf\\u00e9"}}'
    ours = JsonBody(body, status, headers)
    theirs = Response(body, status, headers=headers, media_type="application/json")
    assert ours.raw_headers == theirs.raw_headers
    assert (ours.status_code, ours.body, ours.background) == (status, body, None)


def test_json_response_encodes_with_msgspec():
    response = json_response({"data": {"amount": 12, "at": None}}, 201, {"ETag": '"3"'})
    assert response.body == b'{"data":{"amount":12,"at":null}}'
    assert response.status_code == 201
    assert (b"etag", b'"3"') in response.raw_headers


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [(b"authorization", b"Bearer abc")],
        [(b"host", b"x"), (b"authorization", b"Bearer one"), (b"authorization", b"Bearer two")],
        [(b"authorization", b"Bearer caf\xe9")],  # latin-1, as Starlette decodes it
        [(b"x-authorization", b"no")],
    ],
)
def test_header_reads_what_request_headers_reads(raw):
    request = Request({"type": "http", "headers": raw})
    assert _header(request, b"authorization") == request.headers.get("authorization")


class _SendRecorder(Response):
    """A response that notes which `send` it was given."""

    seen: list[Send] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(send)
        await super().__call__(scope, receive, send)


async def _recorded(request: Request) -> Response:
    return _SendRecorder(b"ok")


async def _refused(request: Request) -> Response:
    request.scope.setdefault("state", {})["seen_by_handler"] = True
    raise ApiError(409, "CONFLICT_TEST", "No.", {"why": "test"}, headers={"Retry-After": "3"})


def _tiny_app() -> Starlette:
    endpoints = [
        Endpoint("GET", "/plain", _recorded, "plain"),
        Endpoint("POST", "/refused", _refused, "refused"),
        Endpoint("GET", "/both", _recorded, "both"),
        Endpoint("POST", "/both", _refused, "both"),
    ]
    return Starlette(routes=build_routes(endpoints), exception_handlers=EXCEPTION_HANDLERS)


async def _call(method: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_tiny_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.request(method, path)


async def test_a_route_gives_the_handlers_response_the_routers_own_send():
    # No wrapper between the router and the response (Starlette's
    # request_response adds one per request, costing about 1.5 us).
    route = build_routes([Endpoint("GET", "/plain", _recorded, "plain")])[0]
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/plain", "headers": [],
             "query_string": b"", "app": None}  # fmt: skip
    _SendRecorder.seen.clear()
    await route.handle(scope, receive, send)
    assert _SendRecorder.seen == [send]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"


@pytest.mark.parametrize("path", ["/refused", "/both"])
async def test_a_handlers_error_reaches_the_apps_exception_handlers(path):
    response = await _call("POST", path)
    assert response.status_code == 409
    assert response.headers["retry-after"] == "3"
    assert response.json() == {
        "error": {"code": "CONFLICT_TEST", "message": "No.", "details": {"why": "test"}}
    }


async def test_a_route_still_answers_only_its_methods():
    assert (await _call("GET", "/both")).text == "ok"
    assert (await _call("HEAD", "/both")).status_code == 200
    wrong = await _call("DELETE", "/both")
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_a_query_parameter_given_twice_is_400_on_every_list(client, tenant):
    """Last-one-wins would filter `?account_id=A&account_id=B` by B alone: refused."""
    headers = tenant.headers()
    r = await client.post("/api/accounts", json={"name": "q", "currency": "USD"}, headers=headers)
    account = r.json()["data"]["id"]
    other = str(uuid.uuid4())
    at = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    cases = [
        ("/api/accounts", "limit", ["1", "2"]),
        ("/api/accounts", "status", ["active", "active"]),
        ("/api/transfers", "account_id", [account, other]),
        (f"/api/accounts/{account}/entries", "limit", ["5", "5"]),
        (f"/api/accounts/{account}/balance", "at", [at, at]),
        ("/api/events", "after", ["0", "1"]),
        ("/api/webhooks", "limit", ["1", "2"]),
        ("/api/usage", "from", [at, at]),
    ]
    for path, name, values in cases:
        once = await client.get(path, params={name: values[0]}, headers=headers)
        assert once.status_code == 200, (path, once.text)
        r = await client.get(path, params=[(name, v) for v in values], headers=headers)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "BAD_REQUEST"
        assert error["details"]["fields"] == [{"field": name, "message": "is given more than once"}]


def _api_operations() -> list[Endpoint]:
    return [ep for ep in ENDPOINTS if ep.path.startswith("/api/")]


@pytest.mark.parametrize("ep", _api_operations(), ids=lambda ep: f"{ep.method} {ep.path}")
async def test_every_api_operation_refuses_a_query_parameter_it_does_not_declare(
    client, tenant, ep
):
    """`POST /api/transfers?dry_run=true` must not move money; a parameter the
    OpenAPI document does not list for the operation is 400, whatever the route."""
    url = _PARAM.sub(str(uuid.uuid4()), ep.path)
    headers = tenant.basic() if ep.scope is None else tenant.headers()
    r = await client.request(ep.method, f"{url}?dry_run=true", headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "BAD_REQUEST"
    assert error["details"]["fields"] == [
        {"field": "dry_run", "message": "is not a known parameter"}
    ]


async def test_declared_query_parameters_pass_and_others_are_named(client, tenant):
    headers = tenant.headers()
    ok = await client.get("/api/accounts?limit=1&status=active", headers=headers)
    assert ok.status_code == 200, ok.text
    r = await client.get("/api/accounts?limit=1&sort=asc&page=2", headers=headers)
    assert r.status_code == 400
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["sort", "page"]
    # A bare `?` or a name with no value is a parameter too.
    account = await client.post(
        "/api/accounts", json={"name": "q", "currency": "USD"}, headers=headers
    )
    url = f"/api/accounts/{account.json()['data']['id']}"
    assert (await client.get(f"{url}?", headers=headers)).status_code == 200
    assert (await client.get(f"{url}?expand", headers=headers)).status_code == 400


async def test_a_transfer_with_an_unknown_query_parameter_moves_nothing(client, tenant):
    headers = tenant.headers()

    async def open_account(**fields):
        body = {"name": "q", "currency": "USD", **fields}
        r = await client.post("/api/accounts", json=body, headers=headers)
        assert r.status_code == 201, r.text
        return r.json()["data"]["id"]

    world, wallet = await open_account(overdraft_limit=None), await open_account()
    body = {"debit_account_id": world, "credit_account_id": wallet, "amount": 7, "currency": "USD"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    refused = await client.post(
        "/api/transfers?dry_run=true", json=body, headers={**headers, **key}
    )
    assert refused.status_code == 400, refused.text
    balance = await client.get(f"/api/accounts/{wallet}", headers=headers)
    assert balance.json()["data"]["balance"]["posted"] == 0
    listed = await client.get("/api/transfers", params={"account_id": wallet}, headers=headers)
    assert listed.json()["data"] == []
    # The key was not claimed: the same key without the parameter runs anew.
    done = await client.post("/api/transfers", json=body, headers={**headers, **key})
    assert done.status_code == 201, done.text
    assert "idempotent-replayed" not in done.headers
    balance = await client.get(f"/api/accounts/{wallet}", headers=headers)
    assert balance.json()["data"]["balance"]["posted"] == 7


async def test_an_unknown_query_parameter_is_checked_after_the_token(client, tenant):
    """Without a valid token the answer is 401, as for any other request."""
    r = await client.get(f"/api/accounts/{uuid.uuid4()}?x=1")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHENTICATED"
    r = await client.post("/api/transfers?x=1", json={}, headers=tenant.headers("ledger:read"))
    assert r.status_code == 403


async def test_the_token_endpoint_takes_no_credentials_in_the_url(client, tenant):
    """RFC 6749 2.3.1: credentials in a URL end up in logs; refused, no token."""
    query = f"client_id={tenant.client_id}&client_secret={tenant.client_secret}"
    r = await client.post(
        f"/api/auth/token?{query}",
        data={"grant_type": "client_credentials"},
    )
    assert r.status_code == 400, r.text
    assert "access_token" not in r.text
    fields = [f["field"] for f in r.json()["error"]["details"]["fields"]]
    assert fields == ["client_id", "client_secret"]


async def test_operational_routes_ignore_their_query_string(client):
    for path in ("/healthz", "/openapi.json", "/.well-known/jwks.json"):
        r = await client.get(f"{path}?cache_bust=1")
        assert r.status_code == 200, (path, r.text)
