"""service.watchdog: deadlines on awaits, one sweeper per event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from service import watchdog


async def _sweepers_left(loop: asyncio.AbstractEventLoop) -> int:
    await asyncio.sleep(2 * watchdog.RESOLUTION)  # a sweeper with nothing to watch ends
    sweeper = watchdog._sweepers.get(loop)
    return 0 if sweeper is None else len(sweeper.waiting) + sweeper.running


async def test_an_await_within_its_deadline_returns_its_result():
    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert await watchdog.wait_until(time.monotonic() + 5, answer()) == 42
    assert await _sweepers_left(asyncio.get_running_loop()) == 0


async def test_an_await_past_its_deadline_is_expired_and_the_task_goes_on():
    started = time.monotonic()
    with pytest.raises(watchdog.Expired):
        await watchdog.wait_until(started + 0.1, asyncio.Event().wait())
    waited = time.monotonic() - started
    assert 0.1 <= waited < 0.1 + watchdog.RESOLUTION + 1.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancel was taken back
    await asyncio.sleep(0.01)  # no cancellation left pending for the next await
    assert await _sweepers_left(asyncio.get_running_loop()) == 0


async def test_many_waiters_each_get_their_own_outcome():
    now = time.monotonic()

    async def one(deadline: float, takes: float) -> str:
        try:
            await watchdog.wait_until(deadline, asyncio.sleep(takes))
        except watchdog.Expired:
            return "expired"
        return "done"

    outcomes = await asyncio.gather(
        one(now + 5, 0.05), one(now + 0.05, 5), one(now + 5, 0.4), one(now + 0.2, 5)
    )
    assert outcomes == ["done", "expired", "done", "expired"]


async def test_a_cancel_from_elsewhere_is_still_a_cancel():
    waiting = asyncio.ensure_future(watchdog.wait_until(time.monotonic() + 5, asyncio.sleep(5)))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await _sweepers_left(asyncio.get_running_loop()) == 0


async def test_a_cancel_from_elsewhere_wins_over_an_expiry():
    async def waits() -> None:
        await watchdog.wait_until(time.monotonic() + 0.05, asyncio.sleep(5))

    task = asyncio.ensure_future(waits())
    await asyncio.sleep(0.01)
    sweeper = watchdog._sweepers[asyncio.get_running_loop()]
    while task not in sweeper.expired:  # the sweeper has cancelled it: now we do too
        assert not task.done()
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
