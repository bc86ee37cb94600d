"""`tally worker` processes: killed with SIGKILL mid-delivery and restarted, nothing is
lost; two workers at once deliver every acknowledged event exactly once."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import psutil
import pytest
from starlette.applications import Starlette

from service.config import Settings
from service.db.pool import Database
from service.ledger.vault import Vault
from service.webhooks.dispatcher import Dispatcher
from tests.conftest import Tenant
from tests.service.webhooks.conftest import eventually
from tests.service.webhooks.receiver import Received, Receiver
from tests.service.webhooks.test_dispatcher import (
    all_delivered,
    deliveries,
    open_accounts,
    register,
)


def start_worker(
    settings: Settings, tenant: Tenant, repo_root: Path, log: Path, launcher: list[str] = ()
) -> subprocess.Popen:
    """`tally worker` for `tenant`; with a `launcher`, run by that command (which runs
    the worker command given as its arguments) instead of directly."""
    env = {
        **os.environ,
        "TALLY_ENV": "test",
        "TALLY_DATABASE_URL": settings.database_url or "",
        "TALLY_JWT_SECRET": settings.jwt_secret,
        "TALLY_ENCRYPTION_KEY": base64.urlsafe_b64encode(settings.encryption_key).decode(),
        "TALLY_WEBHOOK_ALLOW_PRIVATE": "1",
        "TALLY_WEBHOOK_TIMEOUT_SECONDS": "2",
        "TALLY_WEBHOOK_LEASE_SECONDS": "2.5",
        "TALLY_WEBHOOK_POLL_SECONDS": "0.05",
        "TALLY_WEBHOOK_RETRY_SCHEDULE": "0.05,0.05,0.05,0.05,0.05",
    }
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [
                *launcher,
                sys.executable,
                "-m",
                "service.cli",
                "worker",
                "--tenant",
                str(tenant.tenant_id),
            ],
            cwd=repo_root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_worker_killed_mid_delivery_loses_nothing(
    api, owner: Tenant, receiver: Receiver, settings: Settings, repo_root: Path, tmp_path: Path
):
    release = threading.Event()
    first = iter([True])

    def respond(_: Received) -> int:
        if next(first, False):
            release.wait(20)  # the worker dies while this attempt is in flight
        return 200

    receiver.respond = respond
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 5)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, owner, repo_root, log)
    try:

        async def in_flight() -> bool:
            assert worker.poll() is None, log.read_text()
            return len(receiver.requests) >= 1

        await eventually(in_flight, timeout=30, what="the first delivery to arrive")
        worker.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(worker.wait, 10) == -signal.SIGKILL
    finally:
        release.set()
        if worker.poll() is None:
            worker.kill()
    await open_accounts(api, owner, 3)  # written while no worker runs
    (claimed, *_) = await deliveries(api, owner, created["id"])
    assert claimed["status"] == "pending" and claimed["attempt_count"] == 0
    worker = start_worker(settings, owner, repo_root, log)
    try:
        await eventually(all_delivered(api, owner, created["id"], 8), timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    # Only the event in flight at the kill arrived twice: its answer was never recorded.
    assert receiver.sequences() == [1, *range(1, 9)]
    rows = await deliveries(api, owner, created["id"])
    assert [d["attempt_count"] for d in rows] == [1] * 8


# Stands in for `tally dev`: names itself the server, starts the worker, waits.
_DEV = (
    "import os, subprocess, sys, time;"
    " os.environ['TALLY_SERVER_PID'] = str(os.getpid());"
    " subprocess.Popen(sys.argv[1:]); time.sleep(120)"
)


async def test_a_worker_started_by_dev_stops_when_dev_is_killed(
    owner: Tenant, settings: Settings, repo_root: Path, tmp_path: Path
):
    log = tmp_path / "worker.log"
    dev = start_worker(settings, owner, repo_root, log, [sys.executable, "-c", _DEV])
    worker: psutil.Process | None = None

    async def started() -> bool:
        return "webhook worker started" in log.read_text()

    try:
        await eventually(started, timeout=30, what="the worker to start")
        (worker,) = psutil.Process(dev.pid).children()
        dev.kill()
        dev.wait(10)
        _, alive = await asyncio.to_thread(psutil.wait_procs, [worker], 20)
        assert not alive, log.read_text()
    finally:
        dev.kill()
        dev.wait(10)
        if worker is not None and worker.is_running():
            worker.kill()
    text = log.read_text()
    assert "webhook worker stopped" in text, text  # a graceful stop, not a kill


async def test_two_workers_deliver_each_acknowledged_event_once(
    hook_app: Starlette, api, owner: Tenant, hook_settings: Settings
):
    receivers = [Receiver() for _ in range(3)]
    for r in receivers:
        r.start()
    pools = [Database(hook_settings.database_url or "", min_size=1, max_size=4) for _ in range(2)]
    try:
        hooks = [await register(api, owner, r.url) for r in receivers]
        await open_accounts(api, owner, 25)
        stop = asyncio.Event()
        workers = []
        for db in pools:
            await db.open()
            vault = Vault(db, hook_settings.encryption_key, hook_settings.previous_encryption_keys)
            workers.append(Dispatcher(db, vault, hook_settings, tenants=[owner.tenant_id]))
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        try:
            for h in hooks:
                await eventually(all_delivered(api, owner, h["id"], 25), timeout=30)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 15)
        for r in receivers:
            ids = Counter(req.headers["Tally-Event-Id"] for req in r.requests)
            assert set(ids.values()) == {1}, ids
            assert r.sequences() == list(range(1, 26))
        assert sum(w.stats["delivered"] for w in workers) == 75
        assert sum(w.stats["lease_lost"] for w in workers) == 0
        for h in hooks:
            assert all(d["attempt_count"] == 1 for d in await deliveries(api, owner, h["id"]))
    finally:
        for db in pools:
            await db.close()
        for r in receivers:
            r.stop()


@pytest.mark.parametrize("args", [["--tenant", "nope"]])
def test_worker_refuses_a_bad_tenant_id(repo_root: Path, args: list[str]):
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", *args],
        cwd=repo_root,
        env={
            **os.environ,
            "TALLY_ENV": "dev",
            "TALLY_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--tenant" in proc.stderr
