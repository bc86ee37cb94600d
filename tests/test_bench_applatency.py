# ruff: noqa: E501  (lines of the Prometheus text format, as exported)
"""Reading Tally's own latency histogram for the bench (benchmarks/http/applatency.py)."""

from __future__ import annotations

import math

from benchmarks.http import applatency

ROUTE = "/api/accounts/{id}"
TEXT = """# HELP tally_http_request_duration_seconds Request latency
tally_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/accounts/{id}",status="200"} 80.0
tally_http_request_duration_seconds_bucket{le="0.01",method="GET",route="/api/accounts/{id}",status="200"} 90.0
tally_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/api/accounts/{id}",status="200"} 100.0
tally_http_request_duration_seconds_bucket{le="0.01",method="GET",route="/api/accounts/{id}",status="404"} 10.0
tally_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/api/accounts/{id}",status="404"} 10.0
tally_http_request_duration_seconds_bucket{le="0.01",method="PATCH",route="/api/accounts/{id}",status="200"} 5.0
tally_http_request_duration_seconds_bucket{le="0.01",method="GET",route="/api/accounts",status="200"} 7.0
tally_http_request_duration_seconds_count{method="GET",route="/api/accounts/{id}",status="200"} 100.0
"""


def test_parse_sums_statuses_of_one_method_and_route():
    assert applatency.parse(TEXT, "GET", ROUTE) == {0.005: 80.0, 0.01: 100.0, math.inf: 110.0}
    assert applatency.parse(TEXT, "PATCH", ROUTE) == {0.01: 5.0}
    assert applatency.parse("", "GET", ROUTE) == {}


def test_share_over_counts_only_the_requests_between_the_scrapes():
    before = {0.01: 50.0, math.inf: 50.0}
    after = applatency.parse(TEXT, "GET", ROUTE)
    # 60 requests in between, 50 of them within 10 ms.
    assert applatency.share_over(before, after, 0.01) == 10 / 60
    assert applatency.share_over({}, after, 0.005) == 30 / 110
    assert applatency.share_over(after, after, 0.01) is None  # nothing in between
    assert applatency.share_over(None, after, 0.01) is None
    assert applatency.share_over(before, after, 0.02) is None  # not a bucket bound


async def test_the_service_exports_what_parse_reads(client, tenant):
    """The metric name and labels are the ones service.metrics really exports."""
    r = await client.post(
        "/api/accounts", json={"name": "m", "currency": "USD"}, headers=tenant.headers()
    )
    url = f"/api/accounts/{r.json()['data']['id']}"
    before = applatency.parse((await client.get("/metrics")).text, "GET", ROUTE)
    for _ in range(5):
        assert (await client.get(url, headers=tenant.headers())).status_code == 200
    after = applatency.parse((await client.get("/metrics")).text, "GET", ROUTE)
    assert after[math.inf] - before.get(math.inf, 0.0) == 5
    assert 0.01 in after
