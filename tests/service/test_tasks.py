"""Background tasks stop even when a cancellation is swallowed on the way.

Python 3.11's `asyncio.wait_for` (used by psycopg-pool to wait for a
connection) can return normally instead of raising CancelledError; the app's
shutdown then hung on the maintenance loop, about one full test run in three.
"""

from __future__ import annotations

import asyncio
import contextlib

from service.ledger import maintenance
from service.tasks import cancel_and_wait


async def test_cancel_and_wait_repeats_a_swallowed_cancellation():
    swallowed = 0

    async def loop_that_loses_one_cancellation() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what wait_for does when its inner await just finished

    task = asyncio.create_task(loop_that_loses_one_cancellation())
    await asyncio.sleep(0)
    await cancel_and_wait(task, timeout=10, repeat_every=0.05)
    assert task.cancelled() and swallowed == 1


async def test_cancel_and_wait_gives_up_after_the_timeout_and_says_so(caplog):
    released = False

    async def stubborn() -> None:
        while not released:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await cancel_and_wait(task, timeout=0.2, repeat_every=0.05)
    assert not task.done()
    assert any("stubborn" in r.getMessage() for r in caplog.records)
    released = True
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done()


async def test_maintenance_loop_ends_when_its_cancellation_was_swallowed(monkeypatch):
    entered = asyncio.Event()

    async def expire_due_losing_the_cancellation(engine) -> int:
        entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return 0  # returns normally, as wait_for can
        return 0

    monkeypatch.setattr(maintenance, "expire_due", expire_due_losing_the_cancellation)
    task = asyncio.create_task(
        maintenance.run(None, None, interval=0.01, key_retention=1, keys_every=1e9)
    )
    await entered.wait()
    task.cancel()  # once, as the old shutdown did
    done, _ = await asyncio.wait({task}, timeout=5)  # a hang guard only
    assert task in done and task.cancelled()
