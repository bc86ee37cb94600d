"""Token buckets: one per API client in Redis, with an in-process fallback.

The shared bucket is one Lua script run atomically by Redis on Redis's own
clock (EVALSHA; redis-py loads it once and reloads it after a restart); the
takes of concurrent requests share one script call. A worker that sees a
bucket busy takes a small lease of tokens with its next take and hands them
out itself for a moment (see `_Lease`): Redis still grants every token, so a
bucket never gives more than its rate and burst allow. When
Redis cannot be reached, each worker keeps its own buckets (fail open, the
default) or refuses requests with 503 (fail closed); the outage is logged once,
and Redis is tried again after a short pause, so the shared buckets come back
without a restart.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service import metrics
from service.coalesce import Coalescer

log = logging.getLogger("tally.ratelimit")

# KEYS: the buckets; ARGV: rate (tokens/s), burst (capacity) and the tokens
# wanted from each, in turn. One call takes from many buckets (a bucket named
# twice gives twice). A take is granted when at least one token is there, and
# gets as many of those it wants as there are. Returns, per bucket: tokens
# granted (0: refused), tokens left, seconds until a token, seconds until full.
BUCKET_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  local granted = 0
  if tokens >= 1 then
    granted = math.min(want, math.floor(tokens))
    tokens = tokens - granted
  end
  -- Microseconds kept: tostring() keeps 14 digits, i.e. 100 us of the clock,
  -- and a stored time rounded down credits refill nobody waited for.
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  local retry = 0
  if granted == 0 then
    retry = (1 - tokens) / rate
  end
  out[#out + 1] = granted
  out[#out + 1] = tostring(tokens)
  out[#out + 1] = tostring(retry)
  out[#out + 1] = tostring((burst - tokens) / rate)
end
return out
"""

# After a Redis failure, use the local buckets this long before trying again.
_RETRY_REDIS_AFTER = 1.0
# A lease lasts this long; tokens left in it then are dropped, not handed out.
LEASE_SECONDS = 0.05
# A lease holds at most this share of a bucket's burst, and at most what its
# rate refills in one lease: small buckets (burst < 16) are never leased.
LEASE_SHARE = 16


class Decision(NamedTuple):
    """One take's outcome (a tuple: one is made for every request)."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-* headers (the 429 itself carries Retry-After)."""
        return [
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % self.remaining),
            (b"ratelimit-reset", b"%d" % self.reset_seconds),
        ]


class RateLimiterUnavailable(Exception):
    """Redis is down and the limiter is configured to fail closed."""


class _LocalBuckets:
    """The same bucket arithmetic, per worker, on the monotonic clock."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate: float, burst: int, cost: int = 1) -> tuple[bool, float, float]:
        now = time.monotonic()
        tokens, ts = self._buckets.get(key, (float(burst), now))
        tokens = min(burst, tokens + max(0.0, now - ts) * rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        if len(self._buckets) > 100_000:
            self._buckets.clear()  # bounded memory during a long outage
        self._buckets[key] = (tokens, now)
        retry = 0.0 if allowed else (cost - tokens) / rate
        return allowed, tokens, retry


Take = tuple[str, float, int, int]
"""(bucket, rate, burst, wanted): at least one token, up to `wanted`."""


class _Lease:
    """One worker's view of a busy bucket: tokens Redis granted it, not yet used.

    Demand is counted per LEASE_SECONDS window. A take that finds the lease
    empty goes to Redis and, when the previous window saw more takes than one,
    asks for that many more (capped); those come back as the new lease. A
    lease is therefore as large as one window's traffic, never more than
    1/LEASE_SHARE of the burst, and dies after LEASE_SECONDS, so other workers
    (and the bucket's refill) are never kept waiting long. The headers of a
    leased take report the bucket as Redis last saw it plus the lease.
    """

    __slots__ = ("asking", "expires", "last_takes", "left", "takes", "tokens", "window")

    def __init__(self, now: float) -> None:
        self.tokens = 0
        self.expires = 0.0
        self.left = 0.0  # the shared bucket's tokens after the last grant
        self.window = now
        self.takes = 0
        self.last_takes = 0
        self.asking = False  # a take asking for a lease is out

    def count(self, now: float) -> None:
        if now - self.window >= LEASE_SECONDS:
            # A window with no takes in it in between: no recent demand.
            self.last_takes = self.takes if now - self.window < 2 * LEASE_SECONDS else 0
            self.takes = 0
            self.window = now
        self.takes += 1


class RateLimiter:
    """Takes are coalesced: the concurrent takes of a worker go to Redis as one
    script call (see service.coalesce), one round trip for all of them."""

    def __init__(self, redis: aioredis.Redis, *, fail_closed: bool = False) -> None:
        self._script = redis.register_script(BUCKET_LUA)
        self.takes: Coalescer[Take, tuple[Any, ...]] = Coalescer(self._take_many)
        self._leases: dict[str, _Lease] = {}
        self._local = _LocalBuckets()
        self._fail_closed = fail_closed
        self._redis_down_until = 0.0
        self._outage = False

    def take_leased(self, key: str, rate: float, burst: int) -> Decision | None:
        """`take`, when this worker holds live leased tokens of bucket `key`: no
        round trip, so no coroutine either. None: there are none, ask `take`."""
        lease = self._leases.get(key)
        if lease is None or not lease.tokens:
            return None
        now = time.monotonic()
        if now >= lease.expires:
            return None
        if now - lease.window < LEASE_SECONDS:
            lease.takes += 1  # lease.count(now), within the window
        else:
            lease.count(now)
        lease.tokens -= 1
        metrics.count_rate_limit(True, "lease")
        tokens = lease.left + lease.tokens
        # _decision(True, burst, tokens, 0.0, reset), inline: a leased take is allowed.
        reset = math.ceil((burst - tokens) / rate)
        return Decision(True, burst, math.floor(tokens), reset if reset > 0 else 0, 1)

    async def take(self, key: str, rate: float, burst: int) -> Decision:
        """Take one token from bucket `key` (refilled at `rate`/s up to `burst`)."""
        leased = self.take_leased(key, rate, burst)
        if leased is not None:
            return leased
        now = time.monotonic()
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) > 100_000:
                self._leases.clear()  # bounded memory with very many clients
            lease = self._leases[key] = _Lease(now)
        lease.count(now)
        lease.tokens = 0  # none, or expired: dropped
        if now >= self._redis_down_until:
            extra = 0 if lease.asking else _lease_size(lease, rate, burst)
            if extra:
                lease.asking = True
            try:
                granted, tokens, retry, reset = await self.takes.call((key, rate, burst, 1 + extra))
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                if self._outage:
                    self._outage = False
                    log.warning("Redis reachable again: shared rate limits restored")
                granted = int(granted)
                lease.left = float(tokens)
                if granted > 1:
                    lease.tokens = granted - 1
                    lease.expires = time.monotonic() + LEASE_SECONDS
                metrics.count_rate_limit(bool(granted), "redis")
                return _decision(bool(granted), burst, lease.left + lease.tokens,
                                 float(retry), float(reset))  # fmt: skip
            finally:
                if extra:
                    lease.asking = False
        if self._fail_closed:
            metrics.count_rate_limit(None, "none")
            raise RateLimiterUnavailable
        ok, tokens, retry = self._local.take(key, rate, burst)
        metrics.count_rate_limit(ok, "local")
        return _decision(ok, burst, tokens, retry, (burst - tokens) / rate)

    async def _take_many(self, takes: list[Take]) -> list[tuple[Any, ...]]:
        args: list[float] = []
        for _, rate, burst, wanted in takes:
            args += (rate, burst, wanted)
        flat = await self._script(keys=[f"tally:rl:{key}" for key, _, _, _ in takes], args=args)
        return [tuple(flat[i : i + 4]) for i in range(0, len(flat), 4)]

    def _redis_failed(self, exc: Exception) -> None:
        self._redis_down_until = time.monotonic() + _RETRY_REDIS_AFTER
        if not self._outage:
            self._outage = True
            mode = "refusing requests (fail closed)" if self._fail_closed else "per-worker buckets"
            log.error("Redis unreachable for rate limiting (%s); using %s", exc, mode)


def _lease_size(lease: _Lease, rate: float, burst: int) -> int:
    """How many tokens beyond its own a take that goes to Redis asks for."""
    if lease.last_takes < 2:
        return 0
    return min(lease.last_takes, burst // LEASE_SHARE, int(rate * LEASE_SECONDS))


def _decision(allowed: bool, burst: int, tokens: float, retry: float, reset: float) -> Decision:
    # Comparisons rather than max(): one of these is made for every request.
    remaining = math.floor(tokens)
    reset_seconds = math.ceil(reset)
    retry_after = math.ceil(retry)
    return Decision(
        allowed,
        burst,
        remaining if remaining > 0 else 0,
        reset_seconds if reset_seconds > 0 else 0,
        retry_after if retry_after > 1 else 1,
    )
