"""One request's metric updates in multiprocess mode (what every granian worker pays).

prometheus-client's multiprocess values ask for the process id on every
update, to notice a fork. `service.metrics` gives them one kept current by an
at-fork hook; `os.getpid` (the library's default) is a system call each time.
Both value classes are measured here, side by side, in the same run.

Telemetry no longer observes the latency histogram per request: it counts the
latency in the worker's memory (`metrics.observe_request`) and flush_local()
adds the counts to the histogram each second. `test_request_latency` measures
both ways in the same run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, values

from service import metrics

pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=2_000)

IDENTIFIERS: dict[str, Callable[[], int]] = {
    "os.getpid": os.getpid,
    "cached pid": metrics._cached_pid,
}


@pytest.fixture(params=list(IDENTIFIERS), ids=list(IDENTIFIERS))
def request_metrics(
    request: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple]:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(
        values,
        "ValueClass",
        values.MultiProcessValue(process_identifier=IDENTIFIERS[request.param]),
    )
    registry = CollectorRegistry()
    latency = Histogram("bench_seconds", "latency", ["route"], registry=registry)
    in_flight = Gauge(
        "bench_in_flight", "in flight", registry=registry, multiprocess_mode="livesum"
    )
    yield latency.labels("/api/accounts/{id}"), in_flight


def test_request_metric_updates(benchmark: Any, request_metrics: tuple) -> None:
    latency, in_flight = request_metrics

    def one_request() -> None:
        in_flight.inc()
        in_flight.dec()
        latency.observe(0.004)

    benchmark(one_request)


@pytest.fixture(params=["histogram.observe", "kept in memory"])
def observe_latency(
    request: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[[float], None]:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(
        values, "ValueClass", values.MultiProcessValue(process_identifier=metrics._cached_pid)
    )
    latency = Histogram(
        "bench_seconds", "latency", ["route"], buckets=metrics._LATENCY,
        registry=CollectorRegistry(),
    )  # fmt: skip
    child = latency.labels("/api/accounts/{id}")
    if request.param == "histogram.observe":
        return child.observe
    kept = metrics._Latencies(child)
    return kept.observe


def test_request_latency(benchmark: Any, observe_latency: Callable[[float], None]) -> None:
    benchmark(observe_latency, 0.004)
