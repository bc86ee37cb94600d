"""Prometheus metrics, correct across granian's worker processes.

`tally serve` / `tally dev` point PROMETHEUS_MULTIPROC_DIR at an empty
directory before granian forks its workers; each worker then writes its
samples to memory-mapped files there, and `/metrics`, answered by whichever
worker gets the scrape, adds up every worker's files. Without the variable
(in-process tests) the samples live in this process's memory.

The metric objects are built on first use, in the worker, so the value
class (memory or files) is chosen after the variable is set even if
prometheus-client was imported earlier by the parent process.

Routes are labelled by their template (`/api/accounts/{id}`), never by the
raw path, so label cardinality stays bounded; unmatched paths share one
label. Hooks for other modules: `observe_group_commit`,
`observe_group_commit_phase`, `count_rate_limit`, `record_webhook_delivery`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hmac
import math
import os
import re
import shutil
import tempfile
from bisect import bisect_left
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from starlette.types import Scope

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"
WEBHOOK_OUTCOMES = ("delivered", "retry", "failed", "circuit_open", "refused")
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")
# Latency buckets from 1 ms to 10 s: the spec's targets are 10 ms and 50 ms p99.
_LATENCY = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_WAIT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.request_seconds = Histogram(
            "tally_http_request_duration_seconds",
            "HTTP request latency by method, route template and status.",
            ("method", "route", "status"),
            buckets=_LATENCY,
            registry=r,
        )
        self.in_flight = Gauge(
            "tally_http_requests_in_flight",
            "HTTP requests being served (each worker's count as of its last flush, at"
            " most a second ago, or now for the worker answering the scrape).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "tally_db_pool_connections",
            "PostgreSQL connections held by the pools.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_available = Gauge(
            "tally_db_pool_available",
            "Idle PostgreSQL connections in the pools.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "tally_db_pool_waiting",
            "Requests waiting for a PostgreSQL connection.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "tally_db_pool_max",
            "Most PostgreSQL connections the pools may open.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "tally_group_commit_batch_size",
            "Requests committed together in one group-commit transaction.",
            buckets=_BATCH,
            registry=r,
        )
        self.batch_wait = Histogram(
            "tally_group_commit_wait_seconds",
            "Time a transfer request queued before its batch started committing.",
            buckets=_WAIT,
            registry=r,
        )
        self.batch_flush = Histogram(
            "tally_group_commit_flush_seconds",
            "Time one group-commit batch took to write and commit.",
            buckets=_WAIT,
            registry=r,
        )
        self.batch_phase = Histogram(
            "tally_group_commit_phase_seconds",
            "Time a group-commit batch spent in each phase: claim (its idempotency keys),"
            " lock (its holds and accounts, then the clock), decide (the kernel and the"
            " rows to write, in the worker), write (the one write statement), commit.",
            ("phase",),
            buckets=_WAIT,
            registry=r,
        )
        self.batch_failures = Counter(
            "tally_group_commit_failed_batches",
            "Group-commit batches that failed whole (every request got an error).",
            registry=r,
        )
        self.rate_limit = Counter(
            "tally_ratelimit_decisions",
            "Rate-limit decisions by outcome and by the bucket store that made them.",
            ("decision", "store"),
            registry=r,
        )
        self.webhooks = Counter(
            "tally_webhook_deliveries",
            "Webhook delivery attempts by outcome.",
            ("outcome",),
            registry=r,
        )


_registry = CollectorRegistry(auto_describe=True)
_metrics: _Metrics | None = None


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _cached_pid() -> int:
    """This process's id, kept current across forks without a system call.

    prometheus-client asks for it on every update of a multiprocess value (to
    notice a fork); `os.getpid()` there was about 4 % of a worker's samples.
    """
    return _pid


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        # Chosen now, not at prometheus-client's import: files when the
        # multiprocess directory is set in this process's environment.
        if multiprocess_dir():
            values.ValueClass = values.MultiProcessValue(process_identifier=_cached_pid)
        else:
            values.ValueClass = values.get_value_class()
        _metrics = _Metrics(_registry)
    return _metrics


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> bytes:
    """The exposition text: every worker's samples in multiprocess mode."""
    flush_local()
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(_registry)


def worker_exited() -> None:
    """Drop this worker's live gauges (in-flight, pool) from the shared files."""
    flush_local()
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# --- hooks ----------------------------------------------------------------------------


def observe_group_commit(size: int, waits: list[float], flush_seconds: float, ok: bool) -> None:
    """One group-commit batch: its request count, each request's queue wait, its flush time."""
    m = _metrics or _get()
    if not ok:
        m.batch_failures.inc()
        return
    m.batch_size.observe(size)
    m.batch_flush.observe(flush_seconds)
    for wait in waits:
        m.batch_wait.observe(wait)


GROUP_COMMIT_PHASES = ("claim", "lock", "decide", "write", "commit")


def observe_group_commit_phase(phase: str, seconds: float) -> None:
    """One phase of one group-commit attempt (see GROUP_COMMIT_PHASES)."""
    _child((_metrics or _get()).batch_phase, phase).observe(seconds)


def count_rate_limit(allowed: bool | None, store: str) -> None:
    """One rate-limit decision: allowed, limited (429) or None for unavailable (503).

    `store` is "redis" (the shared buckets), "lease" (a worker's lease of
    them) or "local" (the per-worker fallback). Counted in this worker's
    memory until the next flush_local().
    """
    key = (allowed, store)
    _rate_limits[key] = _rate_limits.get(key, 0) + 1


# Per-request values kept in the worker's memory and written to the shared
# samples by flush_local(): every second (sample_forever), before a scrape
# this worker answers, and at exit. In multiprocess mode a counter's inc()
# costs about 0.75 us and a gauge's inc() and dec() about 1 us together.
_rate_limits: dict[tuple[bool | None, str], int] = {}
_in_flight = 0


class _Latencies:
    """One (method, route, status)'s request latencies since the last flush, as
    the latency histogram counts them: a count per bucket (the first bound at or
    above the value, as `Histogram.observe`) and their sum. `observe` costs
    about a tenth of the histogram's own, which updates two shared values."""

    __slots__ = ("child", "counts", "total")

    BOUNDS = (*_LATENCY, math.inf)

    def __init__(self, child: Any) -> None:
        self.child = child
        self.counts = [0] * len(self.BOUNDS)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds

    def flush(self) -> None:
        """Add the latencies so far to the histogram child and start over.

        prometheus-client has no public call that adds many observations at
        once, so this adds to the child's bucket and sum values (`_buckets`,
        `_sum`) itself; tests/service/test_metrics.py checks the result
        against `observe`, value for value."""
        counts, total = self.counts, self.total
        if not any(counts):
            return
        self.counts, self.total = [0] * len(self.BOUNDS), 0.0
        for bucket, n in zip(self.child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)
        self.child._sum.inc(total)


# One per (method, route, status) seen, at most MAX_LATENCY_LABELS (the method is
# the client's to choose); beyond that, a request goes to the histogram itself.
_latencies: dict[tuple[str, str, int], _Latencies] = {}
MAX_LATENCY_LABELS = 10_000


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One finished HTTP request's latency, kept in this worker's memory until
    the next flush_local()."""
    key = (method, route, status)
    latencies = _latencies.get(key)
    if latencies is None:
        child = (_metrics or _get()).request_seconds.labels(method, route, str(status))
        if len(_latencies) >= MAX_LATENCY_LABELS:
            child.observe(seconds)
            return
        latencies = _latencies[key] = _Latencies(child)
    latencies.observe(seconds)


def flush_local() -> None:
    """Write this worker's in-memory counts and latencies, and its in-flight
    requests, to the samples."""
    m = _metrics or _get()
    m.in_flight.set(_in_flight)
    while _rate_limits:
        (allowed, store), n = _rate_limits.popitem()
        decision = "unavailable" if allowed is None else ("allowed" if allowed else "limited")
        _child(m.rate_limit, decision, store).inc(n)
    for latencies in list(_latencies.values()):
        latencies.flush()


def _child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once: `labels()` checks and converts
    its arguments on every call (about 1 us). Only for label values the code
    chooses (bounded); the request path keeps its own, bounded, table for routes."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def record_webhook_delivery(outcome: str) -> None:
    """One webhook delivery attempt's outcome, for the webhook dispatcher to call.

    `outcome` is one of WEBHOOK_OUTCOMES: "delivered" (2xx), "retry" (failed,
    another attempt is scheduled), "failed" (retry budget spent), "circuit_open"
    (skipped: the endpoint's breaker is open) or "refused" (SSRF guard); any
    other value is counted as "other" so the label stays bounded.
    """
    label = outcome if outcome in WEBHOOK_OUTCOMES else "other"
    (_metrics or _get()).webhooks.labels(label).inc()


def sample_pool(stats: dict[str, int]) -> None:
    """Record a psycopg-pool `get_stats()` snapshot of this worker's pool."""
    m = _metrics or _get()
    m.pool_size.set(stats.get("pool_size", 0))
    m.pool_available.set(stats.get("pool_available", 0))
    m.pool_waiting.set(stats.get("requests_waiting", 0))
    m.pool_max.set(stats.get("pool_max", 0))


async def sample_forever(pool: Any, interval: float = 1.0) -> None:
    """Each worker samples its own pool and flushes its own counts (flush_local):
    another worker answers the scrape."""
    try:
        while True:
            # A gauge must never take the worker down, nor one failure stop the other.
            with contextlib.suppress(Exception):
                sample_pool(pool.get_stats())
            with contextlib.suppress(Exception):
                flush_local()
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):
            flush_local()


def route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return _templates.get(path) or _templates.setdefault(path, _CONVERTOR.sub(r"{\1}", path))


_templates: dict[str, str] = {}


def request_started() -> None:
    """An HTTP request came in (the in-flight gauge, flushed by flush_local())."""
    global _in_flight
    _in_flight += 1


def request_finished(method: str, route: str, status: int, seconds: float) -> None:
    """An HTTP request was answered: out of the in-flight count, and its latency."""
    global _in_flight
    _in_flight -= 1
    observe_request(method, route, status, seconds)


def metrics_response_body() -> tuple[bytes, str]:
    return render(), CONTENT_TYPE_LATEST


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time check of `Authorization: Bearer <TALLY_METRICS_TOKEN>`."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), expected)


_prepared = False


def prepare_multiprocess_dir() -> str:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory, before granian forks workers.

    A directory given in the environment is emptied of old samples (a
    restarted server must not add its predecessor's counts); otherwise a
    fresh temporary one is made and removed at exit. Once per process.
    """
    global _prepared
    path = multiprocess_dir()
    if _prepared and path:
        return path
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="tally-metrics-")
        atexit.register(shutil.rmtree, path, True)
        os.environ[MULTIPROC_ENV] = path
    _prepared = True
    return path
