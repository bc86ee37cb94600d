"""The route table: the busiest paths are tried first, and the order changes nothing else."""

from __future__ import annotations

import itertools
import re
import uuid

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api.routing import JsonBody, _header, build_routes, json_response
from service.app import BUSIEST_PATHS, ENDPOINTS

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
