"""Retry and circuit-breaker rules of the dispatcher (pure functions, no I/O).

Retries: attempt n (1-based) that fails is retried after `schedule[n - 1]`
seconds, with +-20 % jitter so a burst of failures does not retry in lockstep;
when the schedule is used up the delivery is given up and its endpoint marked
`failing`.

Circuit breaker, per endpoint: `threshold` consecutive failed attempts open it
for `cooldown` seconds, during which nothing is sent to that endpoint. Then it
is half-open: the next due attempt is the probe (an endpoint has at most one
delivery in flight); success closes it, failure opens it again.
"""

from __future__ import annotations

import random
from datetime import datetime

JITTER = 0.2


def retry_delay(
    schedule: tuple[float, ...], attempt: int, rng: random.Random | None = None
) -> float | None:
    """Seconds until the retry after failed attempt number `attempt`; None: give up."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    spread = (rng or random).uniform(-JITTER, JITTER)
    return base * (1 + spread)


def circuit_state(failures: int, open_until: datetime | None, now: datetime, threshold: int) -> str:
    """`closed`, `open` (refusing until open_until) or `half_open` (next attempt probes)."""
    if open_until is not None and open_until > now:
        return "open"
    if failures >= threshold:
        return "half_open"
    return "closed"
