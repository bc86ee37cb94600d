"""API7:2023 Server-side request forgery: webhook URLs are the one place where a
client makes Tally send requests. The guard refuses non-public targets when a URL
is registered or changed, and again at each delivery.

The full list of address classes, DNS rebinding at delivery and redirects are
tested in tests/service/webhooks/ (test_endpoints_api.py, test_dispatcher.py);
here: spellings that parsers disagree about, and that nothing is written.
"""

from __future__ import annotations

import pytest

from tests.security.support import WEBHOOK_URL, row_counts
from tests.service.api.helpers import assert_error

HOOKS = "/api/webhooks"

SPELLINGS = [
    "HTTP://127.0.0.1/hook",  # upper-case scheme
    "http://LOCALHOST/hook",
    "http://localhost./hook",  # trailing dot
    "http://0177.0.0.1/hook",  # octal
    "http://0x7f.0.0.1/hook",  # hex octet
    "http://127.000.000.001/hook",
    "http://[::]/hook",
    "http://[0:0:0:0:0:ffff:7f00:1]/hook",  # IPv4-mapped, long form
    "http://[::ffff:10.0.0.1]/hook",
    "http://169.254.169.254.nip.invalid/hook",  # does not resolve: refused, not skipped
    "http://93.184.215.14\\@127.0.0.1/hook",  # backslash userinfo trick
    "http://127.0.0.1#@93.184.215.14/hook",
    "http://[fd00::1]/hook",
    "https://metadata.google.internal/computeMetadata/v1/",
    " http://127.0.0.1/hook",
    "http://127.0.0.1:80\t/hook",
    "//127.0.0.1/hook",  # scheme-relative
    "data:text/plain,hello",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("url", SPELLINGS)
async def test_unsafe_spellings_are_refused_and_nothing_is_written(app, client, tenant, url):
    before = await row_counts(app, tenant)
    r = await client.post(HOOKS, json={"url": url}, headers=tenant.headers())
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["code"] in ("BAD_REQUEST", "VALIDATION_ERROR")
    assert await row_counts(app, tenant) == before


@pytest.mark.parametrize("url", SPELLINGS[:6])
async def test_an_endpoint_cannot_be_pointed_inside_later(app, client, tenant, url):
    r = await client.post(HOOKS, json={"url": WEBHOOK_URL}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    path = f"{HOOKS}/{r.json()['data']['id']}"
    r = await client.patch(path, json={"url": url}, headers=tenant.headers())
    assert_error(r, 422, "VALIDATION_ERROR")
    r = await client.get(path, headers=tenant.headers())
    assert r.json()["data"]["url"] == WEBHOOK_URL
