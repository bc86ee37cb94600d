"""Rate limits: Redis token buckets per client, headers, 429, fallback and recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
import redis.asyncio as aioredis

from service import ratelimit
from service.auth import clients as client_service
from service.auth import scopes
from service.ratelimit import (
    BUCKET_LUA,
    LEASE_SECONDS,
    LEASE_SHARE,
    RateLimiter,
    RateLimiterUnavailable,
)
from tests.conftest import make_tenant, serving


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def tight(settings):
    """An app whose limits are small enough to hit in a test."""
    tight_settings = settings.with_overrides(
        rate_limit=2.0, rate_burst=5, auth_rate_limit=1.0, auth_rate_burst=3,
        client_cache_seconds=0.2,
    )  # fmt: skip
    async with serving(tight_settings) as (application, http):
        yield application, http


async def test_bucket_empties_then_429_with_headers(tight):
    application, http = tight
    tenant = await make_tenant(application)
    headers = tenant.headers()
    seen = [await http.get("/api/accounts", headers=headers) for _ in range(5)]
    assert [r.status_code for r in seen] == [200] * 5
    assert [int(r.headers["ratelimit-remaining"]) for r in seen] == [4, 3, 2, 1, 0]
    assert all(r.headers["ratelimit-limit"] == "5" for r in seen)
    refused = await http.get("/api/accounts", headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"
    # Another client of the same tenant has its own bucket.
    other = await make_tenant(application)
    assert (await http.get("/api/accounts", headers=other.headers())).status_code == 200


async def test_bucket_refills_over_time(tight):
    application, http = tight
    tenant = await make_tenant(application)
    for _ in range(5):
        await http.get("/api/accounts", headers=tenant.headers())
    assert (await http.get("/api/accounts", headers=tenant.headers())).status_code == 429
    await asyncio.sleep(0.6)  # 2 tokens/s
    assert (await http.get("/api/accounts", headers=tenant.headers())).status_code == 200


async def test_every_api_response_carries_the_headers(tight):
    application, http = tight
    tenant = await make_tenant(application)
    responses = [
        await http.get("/api/accounts", headers=tenant.headers()),
        await http.get(f"/api/accounts/{tenant.client_id}", headers=tenant.headers()),  # 404
        await http.get("/api/accounts", headers=tenant.headers("ledger:write")),  # 403
        await http.get("/api/accounts"),  # 401, limited per address
    ]
    assert [r.status_code for r in responses] == [200, 404, 403, 401]
    for r in responses:
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(r.headers)
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"


async def test_per_client_override(tight):
    application, http = tight
    tenant = await make_tenant(application)
    generous = await client_service.create_client(
        application.state.db, tenant.tenant_id, scopes.ALL, "big", rate_limit=100, burst=50
    )
    token = application.state.tokens.issue(generous.client_id, tenant.tenant_id, scopes.ALL)
    statuses = [
        (await http.get("/api/accounts", headers={"Authorization": f"Bearer {token}"})).status_code
        for _ in range(12)
    ]
    assert statuses == [200] * 12


async def test_token_endpoint_is_limited_per_client_id(tight):
    application, http = tight
    tenant = await make_tenant(application)
    body = {"client_id": str(tenant.client_id), "client_secret": "wrong"}
    statuses = [(await http.post("/api/auth/token", json=body)).status_code for _ in range(4)]
    # Burst 3 per address and per client id: guesses stop before the 4th check.
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429


async def test_concurrent_takes_are_atomic(redis_url):
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    key = f"test:{os.urandom(8).hex()}"
    decisions = await asyncio.gather(*(limiter.take(key, 0.001, 10) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    await client.aclose()


async def test_concurrent_takes_share_one_script_call_and_each_counts(redis_url):
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    a, b = (f"test:{os.urandom(8).hex()}" for _ in range(2))
    decisions = await asyncio.gather(*(limiter.take(k, 0.001, 3) for k in [a] * 5 + [b] * 2))
    assert limiter.takes.round_trips == 1
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 2 + [True] * 2
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0, 2, 1]
    assert all(d.retry_after >= 1 for d in decisions[3:5])
    await client.aclose()


async def test_redis_down_falls_back_to_local_buckets_and_logs_once(caplog):
    client = aioredis.from_url(f"redis://127.0.0.1:{_closed_port()}/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(client)
    with caplog.at_level(logging.ERROR, logger="tally.ratelimit"):
        decisions = [await limiter.take("k", 0.001, 3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    await client.aclose()


async def test_fail_closed_refuses_when_redis_is_down():
    client = aioredis.from_url(f"redis://127.0.0.1:{_closed_port()}/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(client, fail_closed=True)
    with pytest.raises(RateLimiterUnavailable):
        await limiter.take("k", 1, 3)
    await client.aclose()


async def test_fail_closed_app_answers_503(settings, tenant):
    broken = settings.with_overrides(
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0", rate_limit_fail_closed=True
    )
    async with serving(broken) as (_, http):
        r = await http.get("/api/accounts", headers=tenant.headers())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "retry-after" in r.headers


async def test_shared_buckets_come_back_after_an_outage(redis_url, caplog):
    down = aioredis.from_url(f"redis://127.0.0.1:{_closed_port()}/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(down)
    await limiter.take("k", 1, 3)  # outage noticed, local bucket used
    up = aioredis.from_url(redis_url)
    limiter._script = up.register_script(BUCKET_LUA)  # Redis is back at the same address
    limiter._redis_down_until = 0.0  # the retry pause has passed
    key = f"test:{os.urandom(8).hex()}"
    with caplog.at_level(logging.WARNING, logger="tally.ratelimit"):
        await limiter.take(key, 1, 3)
    assert await up.exists(f"tally:rl:{key}") == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    await down.aclose()
    await up.aclose()


async def test_revoked_client_tokens_stop_within_the_cache_ttl(tight):
    application, http = tight
    tenant = await make_tenant(application)
    headers = tenant.headers()
    assert (await http.get("/api/accounts", headers=headers)).status_code == 200
    async with application.state.db.connection() as conn:
        await conn.execute(
            "UPDATE api_clients SET status = 'revoked' WHERE id = %s", (tenant.client_id,)
        )
    await asyncio.sleep(0.3)  # client_cache_seconds=0.2
    r = await http.get("/api/accounts", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHENTICATED"


def test_cli_sets_and_resets_client_limits(database_url, repo_root):
    env = {**os.environ, "TALLY_DATABASE_URL": database_url, "TALLY_ENV": "test"}

    def tally(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=repo_root,
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    tally("tenants", "create", "limited")
    record = json.loads(tally("clients", "create", "--tenant", "limited", "--rate", "500",
                              "--burst", "1000", "--json"))  # fmt: skip
    assert "rate=500 burst=1000" in tally("clients", "list", "--tenant", "limited")
    tally("clients", "update", record["client_id"], "--rate", "7")
    assert "rate=7 burst=1000" in tally("clients", "list", "--tenant", "limited")
    tally("clients", "update", record["client_id"], "--default-limits")
    assert "rate=default burst=default" in tally("clients", "list", "--tenant", "limited")


async def test_a_busy_bucket_is_leased_and_fewer_takes_go_to_redis(redis_url, lease_clock):
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    key = f"test:{os.urandom(8).hex()}"
    for _ in range(20):  # the first window: no demand seen yet, one round trip each
        assert (await limiter.take(key, 10**6, 10**6)).allowed
    assert limiter.takes.round_trips == 20
    lease_clock[0] += 1.5 * LEASE_SECONDS  # the next window: the last one saw 20 takes
    for _ in range(21):  # one round trip brings a lease of 20 for the other 20
        assert (await limiter.take(key, 10**6, 10**6)).allowed
    assert limiter.takes.round_trips == 21
    await client.aclose()


async def test_leased_takes_count_down_the_remaining_header(redis_url, lease_clock):
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    key = f"test:{os.urandom(8).hex()}"
    for _ in range(10):
        await limiter.take(key, 10**6, 10**9)
    lease_clock[0] += 1.5 * LEASE_SECONDS
    asked = await limiter.take(key, 10**6, 10**9)  # goes to Redis, brings a lease of 10
    trips = limiter.takes.round_trips
    leased = [await limiter.take(key, 10**6, 10**9) for _ in range(5)]
    assert limiter.takes.round_trips == trips  # all five from the lease
    assert [d.remaining for d in leased] == [asked.remaining - 1 - i for i in range(5)]
    await client.aclose()


async def test_small_buckets_are_never_leased(redis_url):
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    key = f"test:{os.urandom(8).hex()}"
    decisions = [await limiter.take(key, 1000, LEASE_SHARE - 1) for _ in range(40)]
    assert limiter.takes.round_trips == 40
    assert sum(d.allowed for d in decisions) >= LEASE_SHARE - 1
    await client.aclose()


async def test_leases_never_grant_more_than_the_bucket_holds(redis_url):
    """Two workers hammering one bucket: Redis grants every token, leased or not."""
    clients = [aioredis.from_url(redis_url) for _ in range(2)]
    workers = [RateLimiter(c) for c in clients]
    key = f"test:{os.urandom(8).hex()}"
    rate, burst = 2000.0, 400
    allowed = 0

    async def hammer(limiter: RateLimiter) -> None:
        nonlocal allowed
        while time.monotonic() < end:
            batch = await asyncio.gather(*(limiter.take(key, rate, burst) for _ in range(8)))
            allowed += sum(d.allowed for d in batch)

    started = time.monotonic()
    end = started + 6 * LEASE_SECONDS
    await asyncio.gather(*(hammer(w) for w in workers))
    elapsed = time.monotonic() - started
    assert sum(w.takes.round_trips for w in workers) > 0
    assert allowed <= burst + rate * elapsed
    assert allowed >= burst  # and they did empty it
    for c in clients:
        await c.aclose()


async def test_an_expired_lease_is_dropped_not_handed_out(redis_url, lease_clock):
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    key = f"test:{os.urandom(8).hex()}"
    for _ in range(20):
        await limiter.take(key, 10**6, 10**9)
    lease_clock[0] += 1.5 * LEASE_SECONDS
    for _ in range(16):  # one round trip brings a lease of 20; 15 of them are used
        await limiter.take(key, 10**6, 10**9)
    trips = limiter.takes.round_trips
    lease_clock[0] += 1.5 * LEASE_SECONDS  # the 5 left have expired: back to Redis
    await limiter.take(key, 10**6, 10**9)
    assert limiter.takes.round_trips == trips + 1
    await client.aclose()


async def test_the_script_never_grants_more_than_rate_and_burst_allow(redis_url):
    """Many takes of one bucket per call, call after call: the refill is exact.

    The bucket's clock was once stored with tostring(), which keeps 100 us of
    it; takes a few microseconds apart were credited refill nobody waited for,
    about 20 % more tokens than the rate under this load.
    """
    client = aioredis.from_url(redis_url)
    script = client.register_script(BUCKET_LUA)
    key = f"tally:rl:test:{os.urandom(8).hex()}"
    rate, burst = 2000, 400
    started = await client.time()
    granted = 0
    for _ in range(1000):
        reply = await script(keys=[key] * 8, args=[rate, burst, 1] * 8)
        granted += sum(int(g) for g in reply[0::4])
    ended = await client.time()
    elapsed = (ended[0] - started[0]) + (ended[1] - started[1]) / 1e6
    assert burst <= granted <= burst + rate * elapsed
    await client.aclose()


async def test_take_leased_takes_only_from_a_live_lease(redis_url, lease_clock):
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    key = f"test:{os.urandom(8).hex()}"
    assert limiter.take_leased(key, 10**6, 10**9) is None  # no lease yet
    for _ in range(10):
        await limiter.take(key, 10**6, 10**9)
    lease_clock[0] += 1.5 * LEASE_SECONDS
    asked = await limiter.take(key, 10**6, 10**9)  # brings a lease of 10
    lease = limiter._leases[key]
    takes = lease.takes
    leased = limiter.take_leased(key, 10**6, 10**9)
    assert leased is not None and leased.allowed
    # What `take` would have answered from the lease, counted as one take.
    assert leased.remaining == asked.remaining - 1 and leased.limit == 10**9
    assert lease.takes == takes + 1 and lease.tokens == 9
    lease_clock[0] += 1.5 * LEASE_SECONDS  # expired: nothing taken, nothing counted
    takes = lease.takes
    assert limiter.take_leased(key, 10**6, 10**9) is None
    assert lease.takes == takes and lease.tokens == 9
    await client.aclose()


def test_a_decision_says_its_headers():
    decision = ratelimit._decision(True, 2000, 1499.7, 0.0, 0.25)
    assert decision.headers() == [
        (b"ratelimit-limit", b"2000"),
        (b"ratelimit-remaining", b"1499"),
        (b"ratelimit-reset", b"1"),
    ]
    refused = ratelimit._decision(False, 5, -0.5, 0.4, -1.0)
    assert (refused.remaining, refused.reset_seconds, refused.retry_after) == (0, 0, 1)
