"""Faults against the real server: PostgreSQL or Redis stopped under load, SIGTERM, SIGKILL.

Bounds from the spec (503 within 2 s, normal service within 5 s of the
database's return) are correctness bounds, checked with polling deadlines;
nothing else here measures speed.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import psycopg

from tests.faults.conftest import (
    Server,
    invariants,
    kill_tree,
    make_client,
    poll,
    start_server,
)


def _open_accounts(http: httpx.Client, headers: dict[str, str], n: int = 2) -> list[str]:
    ids = []
    for i in range(n):
        body = {"name": f"a{i}", "currency": "USD", "overdraft_limit": None}
        r = http.post("/api/accounts", headers=headers, json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["data"]["id"])
    return ids


def _transfer(http: httpx.Client, headers, debit: str, credit: str, amount: int = 1):
    body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount,
            "currency": "USD"}  # fmt: skip
    return http.post("/api/transfers", json=body, headers=headers)


def test_postgres_stopped_under_load_then_back(server: Server, postgres):
    headers = {"Authorization": f"Bearer {server.token()}"}
    with httpx.Client(base_url=server.base, timeout=10) as http:
        source, sink = _open_accounts(http, headers)
    stop_load = threading.Event()
    outcomes: list[tuple[int, float, str]] = []  # (status, seconds, retry-after)

    def load() -> None:
        with httpx.Client(base_url=server.base, timeout=10) as http:
            while not stop_load.is_set():
                started = time.monotonic()
                try:
                    r = _transfer(http, headers, source, sink)
                except httpx.HTTPError as exc:  # a hang or a dropped connection: a failure
                    outcomes.append((0, time.monotonic() - started, repr(exc)))
                    continue
                outcomes.append((r.status_code, time.monotonic() - started,
                                 r.headers.get("retry-after", "")))  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        loaders = [pool.submit(load) for _ in range(4)]
        try:
            _outage_and_recovery(server, postgres, headers, source, outcomes)
        finally:
            stop_load.set()
        for f in loaders:
            f.result(timeout=30)  # nothing hung: every request came back
    with httpx.Client(base_url=server.base, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
        assert http.get(f"/api/accounts/{source}", headers=headers).status_code == 200
    assert server.proc.poll() is None  # served through it without a restart
    logged = [json.loads(line) for line in server.log.read_text().splitlines()
              if line.startswith("{")]  # fmt: skip
    downs = [e for e in logged if e["message"].startswith("database unavailable")]
    assert len(downs) == 1, downs  # once per outage, not per request
    invariants(postgres.url)


def _outage_and_recovery(server, postgres, headers, source, outcomes) -> None:
    if True:
        poll(lambda: sum(s == 201 for s, _, _ in outcomes) >= 20, 30)
        postgres.stop()
        stopped = len(outcomes)
        # Every request answers; once the outage is seen, with 503 + Retry-After within 2 s.
        poll(lambda: sum(s == 503 for s, _, _ in outcomes[stopped:]) >= 20, 30)
        during = [o for o in outcomes[stopped:] if o[0] == 503]
        assert all(seconds < 2.0 and retry for _, seconds, retry in during), during
        assert {s for s, _, _ in outcomes[stopped:]} <= {201, 503}
        with httpx.Client(base_url=server.base, timeout=10) as http:
            r = http.get(f"/api/accounts/{source}", headers=headers)
            assert r.status_code == 503 and r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert r.headers["retry-after"]
            assert http.get("/readyz").status_code == 503
            assert http.get("/healthz").status_code == 200

        postgres.start()
        back = time.monotonic()
        restarted = len(outcomes)
        poll(lambda: any(s == 201 for s, _, _ in outcomes[restarted:]), 5)
        assert time.monotonic() - back < 5
        assert 0 not in {s for s, _, _ in outcomes}, [o for o in outcomes if o[0] == 0][:3]


def test_redis_stopped_rate_limits_fall_back(server: Server, valkey):
    headers = {"Authorization": f"Bearer {server.token()}"}
    with httpx.Client(base_url=server.base, timeout=10) as http:
        (account, _) = _open_accounts(http, headers)
        valkey.stop()
        try:
            for _ in range(30):
                r = http.get(f"/api/accounts/{account}", headers=headers)
                assert r.status_code == 200, r.text
                assert r.headers["ratelimit-limit"]
            assert http.get("/readyz").json()["error"]["details"]["checks"]["redis"] == "down"
        finally:
            valkey.start()
        poll(lambda: http.get("/readyz").status_code == 200, 5)
        assert http.get(f"/api/accounts/{account}", headers=headers).status_code == 200
        metrics = http.get("/metrics").text
    assert 'tally_ratelimit_decisions_total{decision="allowed",store="local"}' in metrics
    logged = server.log.read_text()
    assert logged.count("Redis unreachable for rate limiting") == 1


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(server: Server, postgres):
    statuses = _stop_under_waiting_transfers(
        server, postgres, lambda: server.proc.send_signal(signal.SIGTERM)
    )
    assert statuses == [201, 201, 201]
    assert server.proc.wait(timeout=15) == 0  # TALLY_SHUTDOWN_TIMEOUT_SECONDS is 10
    invariants(postgres.url)


def test_workers_drain_and_exit_when_the_server_process_is_killed(server: Server, postgres):
    """SIGKILL to `tally serve` alone: its granian workers must not live on as orphans
    holding the port; they get SIGTERM from the kernel and drain like on a normal stop."""
    parent = psutil.Process(server.proc.pid)
    workers = poll(lambda: parent.children(recursive=True), 30)

    def kill_the_server_process_only() -> None:
        server.proc.kill()
        server.proc.wait(timeout=10)

    statuses = _stop_under_waiting_transfers(server, postgres, kill_the_server_process_only)
    assert statuses == [201, 201, 201]  # drained: acknowledged, and written
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, alive
    invariants(postgres.url)


def _stop_under_waiting_transfers(server: Server, postgres, stop) -> list[int]:
    """Call `stop` while three transfers wait inside the server on a row lock held
    here; check that new connections are refused at once and that none of the
    three was answered before the lock is let go. Returns their statuses."""
    headers = {"Authorization": f"Bearer {server.token()}"}
    with httpx.Client(base_url=server.base, timeout=10) as http:
        source, sink = _open_accounts(http, headers)
    port = int(server.base.rsplit(":", 1)[1])
    # Hold the source account's row lock: transfers from it wait inside the server.
    with psycopg.connect(postgres.url) as blocker:
        blocker.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (source,))
        with ThreadPoolExecutor(3) as pool:
            in_flight = [
                pool.submit(
                    lambda: _transfer(
                        httpx.Client(base_url=server.base, timeout=30), headers, source, sink
                    )
                )
                for _ in range(3)
            ]
            poll(lambda: _waiting_on_lock(postgres.url) >= 1, 10)
            # All three inside the server (the scrape itself is the fourth).
            poll(lambda: _in_flight(server.base) >= 4, 10)
            stop()
            poll(lambda: not _accepts(port), 5)  # new connections refused while draining
            early = [
                f.result() if not f.exception() else f.exception() for f in in_flight if f.done()
            ]
            assert not early, early
            blocker.commit()  # let the in-flight requests finish
            return [f.result(timeout=20).status_code for f in in_flight]


def _waiting_on_lock(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'tally' AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def _in_flight(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("tally_http_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_sigkill_during_group_commits_loses_no_acknowledged_transfer(
    postgres, valkey, secrets_env, tmp_path
):
    server = start_server(postgres, valkey, secrets_env, tmp_path, TALLY_WORKERS="2")
    server.client_id, server.client_secret = make_client(postgres.url)
    headers = {"Authorization": f"Bearer {server.token()}"}
    with httpx.Client(base_url=server.base, timeout=10) as http:
        accounts = _open_accounts(http, headers, 4)
    acknowledged: list[str] = []
    stop_load = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=server.base, timeout=10) as http:
            i = worker
            while not stop_load.is_set():
                i += 1
                try:
                    r = _transfer(http, headers, accounts[i % 4], accounts[(i + 1) % 4], 1 + i % 9)
                except httpx.HTTPError:
                    return  # the server died under this request: not acknowledged
                if r.status_code == 201:
                    acknowledged.append(r.json()["data"]["id"])

    parent = psutil.Process(server.proc.pid)
    poll(lambda: len(parent.children(recursive=True)) >= 2, 30)  # both workers up
    with ThreadPoolExecutor(16) as pool:
        loaders = [pool.submit(load, w) for w in range(16)]
        poll(lambda: len(acknowledged) >= 300, 60)
        kill_tree(server.proc)  # the whole server at once, mid-batch
        stop_load.set()
        for f in loaders:
            f.result(timeout=30)
    assert len(acknowledged) >= 300

    again = start_server(postgres, valkey, secrets_env, tmp_path)
    try:
        with psycopg.connect(postgres.url) as conn:
            found = {
                str(row[0])
                for row in conn.execute(
                    "SELECT id FROM transfers WHERE id = ANY(%s::uuid[])", (acknowledged,)
                )
            }
        assert set(acknowledged) <= found, len(set(acknowledged) - found)
        invariants(postgres.url)
        with httpx.Client(base_url=again.base, timeout=10) as http:
            r = http.get(f"/api/transfers/{acknowledged[-1]}", headers=headers)
            assert r.status_code == 200, r.text
    finally:
        again.proc.send_signal(signal.SIGTERM)
        again.proc.wait(timeout=30)
