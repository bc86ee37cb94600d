"""Token buckets: one per API client in Redis, with an in-process fallback.

The shared bucket is one Lua script run atomically by Redis on Redis's own
clock (EVALSHA; redis-py loads it once and reloads it after a restart); the
takes of concurrent requests share one script call. When
Redis cannot be reached, each worker keeps its own buckets (fail open, the
default) or refuses requests with 503 (fail closed); the outage is logged once,
and Redis is tried again after a short pause, so the shared buckets come back
without a restart.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service import metrics
from service.coalesce import Coalescer

log = logging.getLogger("tally.ratelimit")

# KEYS: the buckets; ARGV: rate (tokens/s), burst (capacity) and cost of each,
# in turn. One call takes from many buckets (a bucket named twice gives twice).
# Returns, per bucket: allowed, tokens left, seconds until a token, seconds
# until full.
BUCKET_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  local allowed = 0
  if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  local retry = 0
  if allowed == 0 then
    retry = (cost - tokens) / rate
  end
  out[#out + 1] = allowed
  out[#out + 1] = tostring(tokens)
  out[#out + 1] = tostring(retry)
  out[#out + 1] = tostring((burst - tokens) / rate)
end
return out
"""

# After a Redis failure, use the local buckets this long before trying again.
_RETRY_REDIS_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        """RateLimit-* headers (the 429 itself carries Retry-After)."""
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_seconds).encode()),
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


Take = tuple[str, float, int]
"""(bucket, rate, burst): one token to take."""


class RateLimiter:
    """Takes are coalesced: the concurrent takes of a worker go to Redis as one
    script call (see service.coalesce), one round trip for all of them."""

    def __init__(self, redis: aioredis.Redis, *, fail_closed: bool = False) -> None:
        self._script = redis.register_script(BUCKET_LUA)
        self.takes: Coalescer[Take, tuple[Any, ...]] = Coalescer(self._take_many)
        self._local = _LocalBuckets()
        self._fail_closed = fail_closed
        self._redis_down_until = 0.0
        self._outage = False

    async def take(self, key: str, rate: float, burst: int) -> Decision:
        """Take one token from bucket `key` (refilled at `rate`/s up to `burst`)."""
        if time.monotonic() >= self._redis_down_until:
            try:
                allowed, tokens, retry, reset = await self.takes.call((key, rate, burst))
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                if self._outage:
                    self._outage = False
                    log.warning("Redis reachable again: shared rate limits restored")
                metrics.count_rate_limit(bool(allowed), "redis")
                return _decision(bool(allowed), burst, float(tokens), float(retry), float(reset))
        if self._fail_closed:
            metrics.count_rate_limit(None, "none")
            raise RateLimiterUnavailable
        ok, tokens, retry = self._local.take(key, rate, burst)
        metrics.count_rate_limit(ok, "local")
        return _decision(ok, burst, tokens, retry, (burst - tokens) / rate)

    async def _take_many(self, takes: list[Take]) -> list[tuple[Any, ...]]:
        args: list[float] = []
        for _, rate, burst in takes:
            args += (rate, burst, 1)
        flat = await self._script(keys=[f"tally:rl:{key}" for key, _, _ in takes], args=args)
        return [tuple(flat[i : i + 4]) for i in range(0, len(flat), 4)]

    def _redis_failed(self, exc: Exception) -> None:
        self._redis_down_until = time.monotonic() + _RETRY_REDIS_AFTER
        if not self._outage:
            self._outage = True
            mode = "refusing requests (fail closed)" if self._fail_closed else "per-worker buckets"
            log.error("Redis unreachable for rate limiting (%s); using %s", exc, mode)


def _decision(allowed: bool, burst: int, tokens: float, retry: float, reset: float) -> Decision:
    return Decision(
        allowed=allowed,
        limit=burst,
        remaining=max(0, math.floor(tokens)),
        reset_seconds=max(0, math.ceil(reset)),
        retry_after=max(1, math.ceil(retry)),
    )
