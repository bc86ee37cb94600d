"""Coalescer: concurrent calls share round trips, and every caller gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from service.coalesce import Coalescer


class Recorder:
    """A fetch that answers item * 10 and records each round trip's items."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.trips: list[list[int]] = []
        self.gate = gate

    async def __call__(self, items: list[int]) -> list[int]:
        self.trips.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        return [i * 10 for i in items]


async def test_calls_of_one_iteration_share_one_round_trip():
    fetch = Recorder()
    c = Coalescer(fetch)
    results = await asyncio.gather(*(c.call(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert fetch.trips == [list(range(20))]


async def test_a_lone_call_goes_at_once():
    fetch = Recorder()
    c = Coalescer(fetch)
    assert await c.call(3) == 30
    assert await c.call(4) == 40
    assert fetch.trips == [[3], [4]]


async def test_calls_queue_while_the_round_trips_are_out_then_go_together():
    gate = asyncio.Event()
    fetch = Recorder(gate)
    c = Coalescer(fetch, max_inflight=1)
    first = asyncio.ensure_future(c.call(1))
    await asyncio.sleep(0.01)  # the first round trip is out, held at the gate
    rest = [asyncio.ensure_future(c.call(i)) for i in range(2, 6)]
    await asyncio.sleep(0.01)
    assert fetch.trips == [[1]]  # nothing else sent while the one slot is busy
    gate.set()
    assert await first == 10
    assert [await r for r in rest] == [20, 30, 40, 50]
    assert fetch.trips == [[1], [2, 3, 4, 5]]


async def test_a_round_trip_carries_at_most_max_size_calls():
    fetch = Recorder()
    c = Coalescer(fetch, max_size=3, max_inflight=4)
    assert await asyncio.gather(*(c.call(i) for i in range(7))) == [i * 10 for i in range(7)]
    assert sorted(len(t) for t in fetch.trips) == [1, 3, 3]
    assert sorted(i for t in fetch.trips for i in t) == list(range(7))


async def test_a_failed_round_trip_fails_its_callers_only():
    async def fetch(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 13 in items:
            raise ValueError("unlucky")
        return items

    c = Coalescer(fetch)
    bad = await asyncio.gather(c.call(13), c.call(1), return_exceptions=True)
    assert [type(r) for r in bad] == [ValueError, ValueError]
    assert await c.call(2) == 2  # the coalescer carries on


async def test_a_wrong_number_of_results_fails_the_callers_instead_of_hanging():
    async def fetch(items: list[int]) -> list[int]:
        return items[:-1]

    c = Coalescer(fetch)
    with pytest.raises(RuntimeError, match="1 results for 2 calls"):
        await asyncio.gather(c.call(1), c.call(2))


async def test_a_cancelled_caller_does_not_disturb_the_others():
    gate = asyncio.Event()
    fetch = Recorder(gate)
    c = Coalescer(fetch, max_inflight=1)
    gone = asyncio.ensure_future(c.call(1))
    kept = asyncio.ensure_future(c.call(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    gate.set()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
