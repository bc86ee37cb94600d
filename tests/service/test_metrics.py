"""/metrics: Prometheus text, route templates as labels, every hook counted, and
correct sums across granian's worker processes (a real 2-worker server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import metrics
from service.app import create_app
from service.middleware import Envelope
from tests.conftest import Tenant
from tests.service.api.helpers import open_account
from tests.test_server import free_port, production_env, stop, wait_healthy


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[Any, float]:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


REQUESTS = "tally_http_request_duration_seconds_count"


async def test_requests_are_counted_by_route_template_and_status(client, tenant: Tenant):
    account_id = await open_account(client, tenant)
    before = await scrape(client)
    for _ in range(3):
        r = await client.get(f"/api/accounts/{account_id}", headers=tenant.headers())
        assert r.status_code == 200
    r = await client.get("/api/accounts/not-a-uuid", headers=tenant.headers())
    assert r.status_code == 400
    assert (await client.get("/no/such/route/zz-raw-path")).status_code == 404
    text = (await client.get("/metrics")).text
    after = samples(text)
    route = "/api/accounts/{id}"
    got = value(after, REQUESTS, method="GET", route=route, status="200")
    assert got - value(before, REQUESTS, method="GET", route=route, status="200") == 3
    assert value(after, REQUESTS, method="GET", route=route, status="400") >= 1
    assert value(after, REQUESTS, method="GET", route="<unmatched>", status="404") >= 1
    # Raw paths never become labels (cardinality). The sentinels hold letters:
    # digits alone turn up in the samples' timestamps.
    assert account_id not in text and "zz-raw-path" not in text and "not-a-uuid" not in text
    assert ("tally_http_requests_in_flight", ()) in after


async def test_group_commit_and_rate_limit_and_pool_are_measured(client, tenant: Tenant, app):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    before = await scrape(client)
    body = {"debit_account_id": source, "credit_account_id": sink, "amount": 5, "currency": "USD"}
    r = await client.post("/api/transfers", json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    metrics.sample_pool(app.state.db.pool.get_stats())
    after = await scrape(client)
    batches = "tally_group_commit_batch_size_count"
    assert value(after, batches) > value(before, batches)
    assert value(after, "tally_group_commit_wait_seconds_count") > value(
        before, "tally_group_commit_wait_seconds_count"
    )
    allowed = "tally_ratelimit_decisions_total"
    assert value(after, allowed, decision="allowed", store="redis") > value(
        before, allowed, decision="allowed", store="redis"
    )
    assert value(after, "tally_db_pool_connections") >= 1
    assert value(after, "tally_db_pool_max") == app.state.settings.db_pool_max


async def test_every_group_commit_phase_is_timed(client, tenant: Tenant):
    source = await open_account(client, tenant, overdraft_limit=None)
    sink = await open_account(client, tenant)
    before = await scrape(client)
    body = {"debit_account_id": source, "credit_account_id": sink, "amount": 5, "currency": "USD"}
    headers = {**tenant.headers(), "Idempotency-Key": "phases-1"}
    r = await client.post("/api/transfers", json=body, headers=headers)
    assert r.status_code == 201, r.text
    after = await scrape(client)
    name = "tally_group_commit_phase_seconds"
    for phase in metrics.GROUP_COMMIT_PHASES:
        count = value(after, f"{name}_count", phase=phase)
        assert count - value(before, f"{name}_count", phase=phase) == 1, phase
        spent = value(after, f"{name}_sum", phase=phase) - value(before, f"{name}_sum", phase=phase)
        assert spent > 0, phase
    # The phases are the batch's flush, cut into parts.
    flush = "tally_group_commit_flush_seconds_sum"
    parts = sum(
        value(after, f"{name}_sum", phase=p) - value(before, f"{name}_sum", phase=p)
        for p in metrics.GROUP_COMMIT_PHASES
    )
    assert parts <= value(after, flush) - value(before, flush)


def test_the_cached_process_id_follows_a_fork():
    """Multiprocess values use it to notice a fork (and switch to their own files)."""
    assert metrics._cached_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, f"{metrics._cached_pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    seen, actual = map(int, os.read(read, 100).split())
    os.waitpid(child, 0)
    assert seen == actual == child
    assert metrics._cached_pid() == os.getpid() != child


async def test_webhook_delivery_outcomes_hook(client):
    before = await scrape(client)
    metrics.record_webhook_delivery("delivered")
    metrics.record_webhook_delivery("delivered")
    metrics.record_webhook_delivery("something-new")
    after = await scrape(client)
    name = "tally_webhook_deliveries_total"
    assert value(after, name, outcome="delivered") - value(before, name, outcome="delivered") == 2
    assert value(after, name, outcome="other") - value(before, name, outcome="other") == 1


async def test_metrics_token_when_configured(settings):
    token = "m" * 24
    application = create_app(settings.with_overrides(metrics_token=token))
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.get("/metrics")
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
        r = await http.get("/metrics", headers={"Authorization": "Bearer wrong-token-123456"})
        assert r.status_code == 401
        r = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "tally_http_request_duration_seconds" in r.text


def _exposed(name: str, **labels: str) -> float:
    """A sample as the registry holds it now, without render()'s flush."""
    return value(samples(generate_latest(metrics._registry).decode()), name, **labels)


DECISIONS = "tally_ratelimit_decisions_total"


async def test_rate_limit_counts_wait_in_memory_until_a_scrape_flushes_them(client):
    metrics.flush_local()
    before = _exposed(DECISIONS, decision="allowed", store="lease")
    for _ in range(3):
        metrics.count_rate_limit(True, "lease")
    metrics.count_rate_limit(False, "redis")
    metrics.count_rate_limit(None, "none")
    assert _exposed(DECISIONS, decision="allowed", store="lease") == before
    after = await scrape(client)
    assert value(after, DECISIONS, decision="allowed", store="lease") - before == 3
    assert value(after, DECISIONS, decision="limited", store="redis") >= 1
    assert value(after, DECISIONS, decision="unavailable", store="none") >= 1


async def test_the_sampler_flushes_every_period_and_once_more_when_stopped(monkeypatch):
    # What is flushed is tested above and below; here, when. (The registry is the
    # process's: another app's sampler in this test process may flush it too.)
    calls: list[Any] = []
    monkeypatch.setattr(metrics, "flush_local", lambda: calls.append("flush"))
    monkeypatch.setattr(metrics, "sample_pool", lambda stats: calls.append(stats))

    class Pool:
        def get_stats(self) -> dict[str, int]:
            return {"pool_size": 3, "pool_max": 4}

    sampler = asyncio.create_task(metrics.sample_forever(Pool(), interval=0.01))
    deadline = time.monotonic() + 5
    while calls.count("flush") < 3:
        assert time.monotonic() < deadline, f"the sampler did not keep flushing: {calls}"
        await asyncio.sleep(0.01)
    assert {"pool_size": 3, "pool_max": 4} in calls
    periodic = calls.count("flush")
    sampler.cancel()  # it sleeps now: the next thing it does is stop
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    assert calls.count("flush") == periodic + 1


async def test_the_sampler_flushes_even_when_the_pool_cannot_say(monkeypatch):
    flushed = asyncio.Event()
    monkeypatch.setattr(metrics, "flush_local", flushed.set)

    class BrokenPool:
        def get_stats(self) -> dict[str, int]:
            raise RuntimeError("pool closed")

    sampler = asyncio.create_task(metrics.sample_forever(BrokenPool(), interval=0.01))
    try:
        await asyncio.wait_for(flushed.wait(), 5)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def test_a_worker_flushes_its_counts_as_it_exits():
    metrics.flush_local()
    before = _exposed(DECISIONS, decision="limited", store="lease")
    latency_before = _exposed(REQUESTS, method="GET", route="/exit", status="200")
    metrics.count_rate_limit(False, "lease")
    metrics.observe_request("GET", "/exit", 200, 0.003)
    metrics.worker_exited()
    assert _exposed(DECISIONS, decision="limited", store="lease") - before == 1
    assert _exposed(REQUESTS, method="GET", route="/exit", status="200") - latency_before == 1


# Every bound, just either side of each, and the extremes.
_LATENCIES = sorted(
    {0.0, 1e-9, 20.0, 1e9, float("inf")}
    | {b for bound in metrics._LATENCY for b in (bound, bound * 0.999, bound * 1.001)}
)


@pytest.fixture(params=["memory", "files"])
def value_class(request: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The histogram values of an in-process test ("memory") or of a granian worker."""
    if request.param == "files":
        monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
        cls = values.MultiProcessValue(process_identifier=metrics._cached_pid)
    else:
        cls = values.MutexValue
    monkeypatch.setattr(values, "ValueClass", cls)
    return request.param


def _histogram_samples(histogram: Histogram, registry: CollectorRegistry, where: str) -> dict:
    if where == "files":
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        found = samples(generate_latest(merged).decode())
    else:
        found = samples(generate_latest(registry).decode())
    return {
        k: v
        for k, v in found.items()
        if k[0].startswith(histogram._name) and not k[0].endswith("_created")
    }


def test_kept_latencies_flush_to_what_observe_would_have_counted(value_class):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    kept = Histogram("kept_seconds", "x", ("r",), buckets=metrics._LATENCY, registry=ours)
    observed = Histogram("observed_seconds", "x", ("r",), buckets=metrics._LATENCY, registry=theirs)
    latencies = metrics._Latencies(kept.labels("a"))
    previous: dict = {}
    for round_ in range(2):  # a second flush adds to the first
        for seconds in _LATENCIES:
            for _ in range(round_ + 1):
                latencies.observe(seconds)
                observed.labels("a").observe(seconds)
        before = _histogram_samples(kept, ours, value_class)
        assert before == (previous or dict.fromkeys(before, 0.0)), "nothing before a flush"
        latencies.flush()
        latencies.flush()  # nothing new: adds nothing
        got = _histogram_samples(kept, ours, value_class)
        want = _histogram_samples(observed, theirs, value_class)
        renamed = {
            (name.replace("observed", "kept"), labels): v for (name, labels), v in want.items()
        }
        assert renamed == got
        assert len(got) == len(metrics._LATENCY) + 1 + 2  # the buckets, +Inf, count, sum
        previous = got


async def test_request_latencies_wait_in_memory_until_a_scrape_flushes_them(client, tenant):
    metrics.flush_local()
    before = _exposed(REQUESTS, method="GET", route="/api/accounts", status="200")
    r = await client.get("/api/accounts", headers=tenant.headers())
    assert r.status_code == 200
    assert _exposed(REQUESTS, method="GET", route="/api/accounts", status="200") == before
    after = await scrape(client)
    assert value(after, REQUESTS, method="GET", route="/api/accounts", status="200") == before + 1


def test_past_the_label_bound_a_latency_goes_straight_to_the_histogram(monkeypatch):
    monkeypatch.setattr(metrics, "MAX_LATENCY_LABELS", 0)
    before = _exposed(REQUESTS, method="BREW", route="/pot", status="418")
    metrics.observe_request("BREW", "/pot", 418, 0.002)
    assert _exposed(REQUESTS, method="BREW", route="/pot", status="418") == before + 1
    assert ("BREW", "/pot", 418) not in metrics._latencies


async def test_in_flight_requests_are_counted_while_they_run():
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await release.wait()
        return Response(b"done")

    async def gauge(request: Request) -> Response:
        return Response(metrics.render())

    app = Envelope(Starlette(routes=[Route("/slow", slow), Route("/gauge", gauge)]), 100, 100)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        base = value(samples((await http.get("/gauge")).text), "tally_http_requests_in_flight")
        pending = asyncio.create_task(http.get("/slow"))
        await asyncio.wait_for(started.wait(), 5)
        during = samples((await http.get("/gauge")).text)
        release.set()
        assert (await pending).status_code == 200
        after = samples((await http.get("/gauge")).text)
    # The scrape itself is in flight too.
    assert value(during, "tally_http_requests_in_flight") == base + 1
    assert value(after, "tally_http_requests_in_flight") == base


def test_multiprocess_dir_is_emptied_at_start(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "_prepared", False)
    stale = tmp_path / "counter_424242.db"
    stale.write_bytes(b"old")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    assert metrics.prepare_multiprocess_dir() == str(tmp_path)
    assert not stale.exists()


@pytest.mark.server
def test_counts_add_up_across_two_granian_workers(database_url, redis_url, repo_root, tmp_path):
    """Requests spread over both workers; /metrics (from either) counts every one."""
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "histogram_999999.db").write_bytes(b"stale")  # a previous run's leftovers
    port = free_port()
    env = production_env(
        database_url, redis_url, port,
        TALLY_WORKERS="2", TALLY_DATA_DIR=str(tmp_path), **{metrics.MULTIPROC_ENV: str(prom)},
    )  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=repo_root,
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        sent = _spread_over_workers(base, prom)
        # Whichever worker answers the scrape, it counts every worker's requests:
        # the other worker's as of its last flush, at most a second ago.
        deadline = time.monotonic() + 10
        while True:
            found = samples(httpx.get(f"{base}/metrics", timeout=5).text)
            if value(found, REQUESTS, method="GET", route="/readyz", status="200") == sent:
                break
            assert time.monotonic() < deadline, "the other worker's counts never arrived"
            time.sleep(0.2)
        for _ in range(6):
            found = samples(httpx.get(f"{base}/metrics", timeout=5).text)
            assert value(found, REQUESTS, method="GET", route="/readyz", status="200") == sent
        assert value(found, "tally_db_pool_max") == 2 * 10  # both workers' pools, summed
    finally:
        code = stop(proc, signal.SIGTERM)
    assert code == 0, log.read_text()
    assert not (prom / "histogram_999999.db").exists()


def _readyz_by_worker(prom: Path) -> list[float]:
    """GET /readyz answered, per worker file (read as the collector reads them)."""
    counts = []
    for path in prom.glob("histogram_*.db"):
        found = 0.0
        for family in MultiProcessCollector._read_metrics([str(path)]).values():
            for s in family.samples:
                # Files hold each bucket's own count (not cumulative): add them up.
                labels = dict(s.labels)
                if s.name.endswith("_bucket") and labels.get("route") == "/readyz":
                    found += s.value
        counts.append(found)
    return counts


def _spread_over_workers(base: str, prom: Path) -> int:
    """GET /readyz over concurrent connections until both workers have answered some.

    Sequential connections tend to land on the same idle worker; a few busy
    connections at once get accepted by both.
    """
    deadline = time.monotonic() + 60

    def burst(_: int) -> int:
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(10):
                assert http.get("/readyz").status_code == 200
        return 10

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            sent += sum(pool.map(burst, range(16)))
            if sum(1 for n in _readyz_by_worker(prom) if n > 0) >= 2:
                return sent
    raise AssertionError("one worker answered every request")
