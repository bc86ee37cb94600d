"""Tally's own latency for one route, read from its /metrics between two scrapes.

wrk's latency runs from the request's first byte sent to the response's last byte
read: it includes the time a request waits for a granian worker or its event
loop to run, for a core (PostgreSQL's backends and wrk share the two), and for
the kernel's loopback. `tally_http_request_duration_seconds` starts when the
request reaches Tally's Envelope and ends when the last byte is handed to
granian. The share of requests over a bound in each says where a tail comes
from: in Tally's code when the app's own share is as large as wrk's, around it
when it is much smaller (see README, Performance).

Workers add a request to the histogram in their memory and flush it each second
(service.metrics): scrape a second or more after the load has stopped.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

BUCKET = "tally_http_request_duration_seconds_bucket"
FLUSH_SECONDS = 1.5  # the workers' flush interval (1 s), with a margin


def parse(text: str, method: str, route: str) -> dict[float, float]:
    """{upper bound in seconds: requests at or under it} for `method` `route`,
    summed over statuses and workers, from the Prometheus text format."""
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name != BUCKET or labels.get("method") != method:
                continue
            if labels.get("route") != route:
                continue
            bound = float(labels["le"])  # "+Inf" parses as inf
            counts[bound] = counts.get(bound, 0.0) + sample.value
    return counts


def scrape(base_url: str, method: str, route: str) -> dict[float, float] | None:
    """The histogram now (None if /metrics cannot be read)."""
    try:
        response = httpx.get(f"{base_url}/metrics", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse(response.text, method, route)


def share_over(
    before: dict[float, float] | None, after: dict[float, float] | None, bound: float
) -> float | None:
    """The share of the requests between the two scrapes that took longer than
    `bound` (one of the histogram's bucket bounds); None without data."""
    if before is None or after is None or bound not in after:
        return None
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return None
    within = after[bound] - before.get(bound, 0.0)
    return (total - within) / total
