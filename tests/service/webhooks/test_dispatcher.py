"""The dispatcher against real local receivers: signatures, order, retries, timeouts,
the circuit breaker, giving up and resuming, pauses, filters, redirects, DNS rebinding,
and a dead receiver that must not hold up the others."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from service.db import webhooks as webhook_sql
from service.webhooks import endpoints as endpoint_service
from service.webhooks import signing
from service.webhooks.schemas import WebhookCreate
from tests.conftest import Tenant
from tests.service.webhooks.conftest import eventually
from tests.service.webhooks.receiver import Received, Receiver


async def register(api: httpx.AsyncClient, tenant: Tenant, url: str, **body: Any) -> dict[str, Any]:
    r = await api.post("/api/webhooks", json={"url": url, **body}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def open_accounts(api: httpx.AsyncClient, tenant: Tenant, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = await api.post(
            "/api/accounts",
            json={"name": f"a{i}", "currency": "USD", "overdraft_limit": None},
            headers=tenant.headers(),
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["data"]["id"])
    return ids


async def hook(api: httpx.AsyncClient, tenant: Tenant, hook_id: str) -> dict[str, Any]:
    r = await api.get(f"/api/webhooks/{hook_id}", headers=tenant.headers())
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def deliveries(api: httpx.AsyncClient, tenant: Tenant, hook_id: str) -> list[dict[str, Any]]:
    r = await api.get(f"/api/webhooks/{hook_id}/deliveries?limit=1000", headers=tenant.headers())
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data[::-1]  # oldest first


async def feed(api: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    r = await api.get("/api/events?limit=1000", headers=tenant.headers())
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def got(receiver: Receiver, n: int) -> Any:
    async def check() -> bool:
        return len(receiver.requests) >= n

    return check


def all_delivered(api: httpx.AsyncClient, tenant: Tenant, hook_id: str, n: int) -> Any:
    async def check() -> bool:
        rows = await deliveries(api, tenant, hook_id)
        return len(rows) == n and all(d["status"] == "delivered" for d in rows)

    return check


def _docs_recipe() -> Any:
    """The `verify` function of the receiver example in docs/webhooks.md, run as written."""
    text = (Path(__file__).parents[3] / "docs" / "webhooks.md").read_text()
    code = text.split("```python\n", 1)[1].split("\nclass Receiver", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code.replace('os.environ["TALLY_WEBHOOK_SECRET"]', '""'), namespace)
    return namespace["verify"]


verify_like_the_docs = _docs_recipe()


async def test_deliveries_are_signed_and_carry_the_event(api, owner, receiver, run_dispatcher):
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 2)
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 2))
    events = await feed(api, owner)
    assert len(receiver.requests) == 2
    for request, event in zip(receiver.requests, events, strict=True):
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert request.event == event
        assert headers["tally-event-id"] == event["id"]
        assert headers["tally-event-type"] == event["type"]
        assert headers["content-type"] == "application/json"
        assert headers["host"] == f"127.0.0.1:{receiver.port}"
        signature = headers["tally-signature"]
        assert verify_like_the_docs(created["secret"], request.body, signature)
        assert signing.verify(created["secret"], request.body, signature)
        # Any change to the body, the secret or the timestamp breaks it.
        assert not verify_like_the_docs(created["secret"], request.body + b" ", signature)
        assert not verify_like_the_docs("whsec_other", request.body, signature)
        with pytest.raises(signing.InvalidSignature):
            signing.verify(created["secret"], request.body, signature, now=time.time() + 301)
        forged_t = signature.replace("t=", "t=1", 1)
        with pytest.raises(signing.InvalidSignature):
            signing.verify(created["secret"], request.body, forged_t, tolerance=10**12)
    rows = await deliveries(api, owner, created["id"])
    assert [d["attempt_count"] for d in rows] == [1, 1]
    attempt = rows[0]["attempts"][0]
    assert attempt["status_code"] == 200 and attempt["error"] is None
    assert attempt["latency_ms"] >= 0 and rows[0]["next_attempt_at"] is None


async def test_each_endpoint_gets_its_events_in_sequence_order(api, owner, run_dispatcher):
    receivers = [Receiver(), Receiver()]
    for r in receivers:
        r.start()
    try:
        hooks = [await register(api, owner, r.url) for r in receivers]
        accounts = await open_accounts(api, owner, 3)
        async with run_dispatcher(owner):
            for i in range(20):
                body = {
                    "debit_account_id": accounts[i % 3],
                    "credit_account_id": accounts[(i + 1) % 3],
                    "amount": 1,
                    "currency": "USD",
                }
                r = await api.post("/api/transfers", json=body, headers=owner.headers())
                assert r.status_code == 201
            for h in hooks:
                await eventually(all_delivered(api, owner, h["id"], 23))
        expected = [e["sequence"] for e in await feed(api, owner)]
        for r in receivers:
            assert r.sequences() == expected
    finally:
        for r in receivers:
            r.stop()


async def test_receiver_failing_with_500_then_200_is_retried(api, owner, receiver, run_dispatcher):
    answers = iter([500, 503])
    receiver.respond = lambda _: next(answers, 200)
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 2)
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 2))
    # The first event three times (500, 503, 200), and only then the second.
    assert receiver.sequences() == [1, 1, 1, 2]
    first = (await deliveries(api, owner, created["id"]))[0]
    assert [a["status_code"] for a in first["attempts"]] == [500, 503, 200]
    assert [a["error"] for a in first["attempts"]] == ["HTTP 500", "HTTP 503", None]
    assert [a["attempt"] for a in first["attempts"]] == [1, 2, 3]
    attempts = [r.headers["Tally-Delivery-Attempt"] for r in receiver.requests[:3]]
    assert attempts == ["1", "2", "3"]
    ids = {r.headers["Tally-Event-Id"] for r in receiver.requests[:3]}
    assert len(ids) == 1
    assert (await hook(api, owner, created["id"]))["circuit"]["consecutive_failures"] == 0


async def test_receiver_that_times_out_is_retried(api, owner, receiver, run_dispatcher):
    release = threading.Event()
    calls = iter([True])

    def respond(_: Received) -> int:
        if next(calls, False):
            release.wait(10)  # far past the 0.3 s timeout
        return 200

    receiver.respond = respond
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 1)
    try:
        async with run_dispatcher(owner, webhook_timeout_seconds=0.3):
            await eventually(all_delivered(api, owner, created["id"], 1))
    finally:
        release.set()
    (delivery,) = await deliveries(api, owner, created["id"])
    first, second = delivery["attempts"]
    assert first["status_code"] is None and "timed out" in first["error"]
    assert first["latency_ms"] >= 300
    assert second["status_code"] == 200


async def test_circuit_opens_while_the_receiver_is_down_and_closes_when_it_is_back(
    api, owner, receiver, run_dispatcher
):
    receiver.stop()  # connections refused from now on
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 3)
    many = tuple([0.05] * 40)
    async with run_dispatcher(owner, webhook_retry_schedule=many):

        async def circuit_open() -> bool:
            return (await hook(api, owner, created["id"]))["circuit"]["state"] == "open"

        await eventually(circuit_open, what="the circuit to open")
        state = (await hook(api, owner, created["id"]))["circuit"]
        assert state["consecutive_failures"] >= 3 and state["open_until"] is not None
        first = (await deliveries(api, owner, created["id"]))[0]
        assert first["status"] == "pending" and first["attempt_count"] >= 3
        assert "ConnectError" in first["attempts"][0]["error"]
        # Strict order: nothing after the first event was tried while it fails.
        assert [d["attempt_count"] for d in await deliveries(api, owner, created["id"])][1:] == [
            0,
            0,
        ]
        receiver.start()  # back, on the same port
        await eventually(all_delivered(api, owner, created["id"], 3), what="the backlog")
    assert receiver.sequences() == [1, 2, 3]
    circuit = (await hook(api, owner, created["id"]))["circuit"]
    assert circuit == {"state": "closed", "consecutive_failures": 0, "open_until": None}


async def test_spent_retry_budget_marks_the_endpoint_failing_until_resumed(
    api, owner, receiver, run_dispatcher
):
    receiver.respond = lambda _: 500
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 2)
    url = f"/api/webhooks/{created['id']}"
    async with run_dispatcher(owner, webhook_retry_schedule=(0.05, 0.05)):

        async def failing() -> bool:
            return (await hook(api, owner, created["id"]))["status"] == "failing"

        await eventually(failing, what="the endpoint to be failing")
        first, second = await deliveries(api, owner, created["id"])
        assert first["status"] == "failed" and first["attempt_count"] == 3
        assert first["next_attempt_at"] is None
        assert second["status"] == "pending" and second["attempt_count"] == 0
        seen = len(receiver.requests)
        receiver.respond = lambda _: 200
        r = await api.patch(url, json={"status": "enabled"}, headers=owner.headers())
        assert r.status_code == 200 and r.json()["data"]["circuit"]["state"] == "closed"

        async def second_delivered() -> bool:
            rows = await deliveries(api, owner, created["id"])
            return rows[1]["status"] == "delivered"

        await eventually(second_delivered)
    assert seen == 3 and receiver.sequences() == [1, 1, 1, 2]
    first, _ = await deliveries(api, owner, created["id"])
    assert first["status"] == "failed"  # given up; the event is still in the feed
    r = await api.get(url + "/deliveries?status=failed", headers=owner.headers())
    assert [d["sequence"] for d in r.json()["data"]] == [1]


async def test_paused_endpoint_gets_its_backlog_in_order_when_resumed(
    api, owner, receiver, run_dispatcher
):
    created = await register(api, owner, receiver.url)
    url = f"/api/webhooks/{created['id']}"
    r = await api.patch(url, json={"status": "paused"}, headers=owner.headers())
    assert r.status_code == 200
    await open_accounts(api, owner, 3)
    async with run_dispatcher(owner):

        async def queued() -> bool:
            return len(await deliveries(api, owner, created["id"])) == 3

        await eventually(queued)
        assert receiver.requests == []
        await api.patch(url, json={"status": "enabled"}, headers=owner.headers())
        await eventually(all_delivered(api, owner, created["id"], 3))
    assert receiver.sequences() == [1, 2, 3]


async def test_only_matching_event_types_are_delivered(api, owner, receiver, run_dispatcher):
    created = await register(api, owner, receiver.url, events=["transfer.pending"])
    a, b = await open_accounts(api, owner, 2)
    body = {"debit_account_id": a, "credit_account_id": b, "amount": 1, "currency": "USD"}
    for pending in (False, True):
        r = await api.post(
            "/api/transfers", json={**body, "pending": pending}, headers=owner.headers()
        )
        assert r.status_code == 201
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 1))
        await eventually(got(receiver, 1))
    assert [e["type"] for e in receiver.events()] == ["transfer.pending"]
    assert receiver.sequences() == [4]


async def test_redirects_are_not_followed(api, owner, receiver, run_dispatcher):
    receiver.respond = lambda _: 302
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 1)
    async with run_dispatcher(owner):

        async def failed_twice() -> bool:
            rows = await deliveries(api, owner, created["id"])
            return bool(rows) and rows[0]["attempt_count"] >= 2

        await eventually(failed_twice)
    assert {r.path for r in receiver.requests} == {"/hook"}
    (delivery,) = await deliveries(api, owner, created["id"])
    assert delivery["status"] == "pending"
    assert delivery["attempts"][0]["error"] == "HTTP 302 (redirects are not followed)"


async def test_dns_rebinding_to_a_private_address_is_refused_at_delivery(
    hook_app: Starlette, api, owner, receiver, run_dispatcher
):
    """Registered while the name resolved to a public address; by delivery time it
    resolves to loopback, so the dispatcher refuses and sends nothing."""

    async def public(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    async def rebound(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    spec = WebhookCreate(url=f"http://hooks.rebind.test:{receiver.port}/hook")
    row, _ = await endpoint_service.create(
        hook_app.state.db, hook_app.state.vault, owner.tenant_id, spec, False, public
    )
    await open_accounts(api, owner, 1)
    async with run_dispatcher(owner, resolver=rebound, webhook_allow_private=False):

        async def refused() -> bool:
            rows = await deliveries(api, owner, str(row[0]))
            return bool(rows) and rows[0]["attempt_count"] >= 1

        await eventually(refused)
    (delivery,) = await deliveries(api, owner, str(row[0]))
    assert "loopback" in delivery["attempts"][0]["error"]
    assert delivery["attempts"][0]["status_code"] is None
    assert receiver.requests == []


async def test_a_hung_receiver_does_not_hold_up_other_endpoints_or_writes(
    api, owner, run_dispatcher
):
    hung, healthy = Receiver(), Receiver()
    release = threading.Event()
    hung.respond = lambda _: (release.wait(30), 200)[1]
    hung.start()
    healthy.start()
    try:
        slow = await register(api, owner, hung.url)
        fast = await register(api, owner, healthy.url)
        await open_accounts(api, owner, 1)
        async with run_dispatcher(owner, webhook_timeout_seconds=20, webhook_lease_seconds=30):
            await eventually(got(hung, 1), what="the hung receiver's first request")
            # While the first attempt hangs, writes go on and the other endpoint keeps up.
            await open_accounts(api, owner, 10)
            await eventually(all_delivered(api, owner, fast["id"], 11))
            assert healthy.sequences() == list(range(1, 12))
            assert len(hung.requests) == 1  # one at a time, in order
            release.set()
            await eventually(all_delivered(api, owner, slow["id"], 11))
        assert hung.sequences() == list(range(1, 12))
    finally:
        release.set()
        hung.stop()
        healthy.stop()


async def test_outcomes_reach_the_metrics(api, owner, receiver, run_dispatcher):
    from prometheus_client.parser import text_string_to_metric_families

    async def counts() -> dict[str, float]:
        text = (await api.get("/metrics")).text
        return {
            s.labels["outcome"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "tally_webhook_deliveries_total"
        }

    before = await counts()
    answers = iter([500])
    receiver.respond = lambda _: next(answers, 200)
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 1)
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 1))
    after = await counts()
    assert after.get("retry", 0) - before.get("retry", 0) == 1
    assert after.get("delivered", 0) - before.get("delivered", 0) == 1


async def test_a_failed_dispatcher_pass_is_logged_and_the_next_one_delivers(
    api, owner, receiver, run_dispatcher, monkeypatch, caplog
):
    real_fan_out = webhook_sql.fan_out
    failures = []

    async def fan_out_failing_once(*args: Any, **kwargs: Any) -> tuple[int, int]:
        if not failures:
            failures.append(1)
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return await real_fan_out(*args, **kwargs)

    monkeypatch.setattr(webhook_sql, "fan_out", fan_out_failing_once)
    created = await register(api, owner, receiver.url)
    await open_accounts(api, owner, 2)
    async with run_dispatcher(owner):
        await eventually(all_delivered(api, owner, created["id"], 2))
    assert failures and "webhook dispatcher pass failed" in caplog.text
