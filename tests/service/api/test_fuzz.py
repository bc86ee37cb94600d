"""No input causes a 500: random bodies, paths and query strings, always an envelope."""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
account_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values | st.text(max_size=210),
        "currency": json_values | st.from_regex(r"[A-Z][A-Z0-9_]{1,12}", fullmatch=True),
        "overdraft_limit": json_values | st.integers(min_value=-(2**65), max_value=2**65),
        "status": json_values | st.sampled_from(["active", "frozen", "closed", "open"]),
        "metadata": json_values | st.dictionaries(st.text(max_size=45), st.text(max_size=20)),
        "holder": json_values | st.fixed_dictionaries({"name": st.text(), "email": st.text()}),
    },
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    account_like.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)


def draw(strategy: st.SearchStrategy, count: int = 150) -> list:
    """Examples from a strategy, for async tests (hypothesis drives sync tests only)."""
    found: list = []

    @settings(
        max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def collect(example):
        found.append(example)

    collect()
    return found


def assert_no_500(response, sent) -> None:
    assert response.status_code < 500, (sent, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, sent
        assert {"code", "message", "details"} <= set(body["error"]), sent


JSON = {"Content-Type": "application/json"}


async def test_open_account_never_500(client, tenant):
    headers = {**tenant.headers(), **JSON}
    for body in draw(bodies):
        assert_no_500(await client.post("/api/accounts", content=body, headers=headers), body)


async def test_patch_account_never_500(client, tenant):
    headers = {**tenant.headers(), **JSON}
    r = await client.post("/api/accounts", json={"name": "fz", "currency": "USD"}, headers=headers)
    url = f"/api/accounts/{r.json()['data']['id']}"
    for body in draw(bodies):
        assert_no_500(await client.patch(url, content=body, headers=headers), body)


async def test_token_never_500(client):
    for body, form in draw(st.tuples(bodies, st.booleans())):
        ctype = "application/x-www-form-urlencoded" if form else "application/json"
        r = await client.post("/api/auth/token", content=body, headers={"Content-Type": ctype})
        assert_no_500(r, body)


async def test_paths_and_queries_never_500(client, tenant):
    headers = tenant.headers()
    queries = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4)
    for segment, query in draw(st.tuples(st.text(max_size=40), queries)):
        r = await client.get(f"/api/accounts/{quote(segment, safe='')}", headers=headers)
        assert_no_500(r, segment)
        assert_no_500(await client.get("/api/accounts", params=query, headers=headers), query)


async def test_random_bearer_is_always_401(client):
    printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300)
    for token in draw(printable):
        r = await client.get("/api/accounts", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert_no_500(r, token)
