"""The webhook dispatcher: what `tally worker` runs.

Each pass (every TALLY_WEBHOOK_POLL_SECONDS, or at once when a delivery
finishes) it

1. fans out: new events of each endpoint's tenant become delivery rows, in
   sequence order, for the endpoints whose filter they match;
2. claims due deliveries with FOR UPDATE SKIP LOCKED and a lease, at most
   one per endpoint (the endpoint's oldest pending one), so an endpoint gets
   its events one at a time in sequence order;
3. sends each claimed delivery as a signed POST in its own task, up to
   TALLY_WEBHOOK_CONCURRENCY at once, so a slow or dead receiver holds one
   slot for at most one timeout and never delays the other endpoints;
4. records the outcome under the lease: delivered, retry later (backoff with
   jitter), or given up (the endpoint becomes `failing`), and feeds the
   endpoint's circuit breaker (see policy.py);
5. every PURGE_EVERY seconds, erases rotated-out signing secrets whose grace
   period is over, and deletes settled deliveries older than
   TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS, PURGE_BATCH at a time (one batch
   a pass while more remain, so deliveries never wait on a long purge).

Several workers may run at once. A worker that dies leaves its claims leased
until `locked_until`; then they are due again and another worker retries
them. Only then can a receiver see an event twice (its acknowledgement was
never recorded), so receivers should deduplicate on Tally-Event-Id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from service import crypto, metrics, orphans
from service.config import Settings
from service.db import webhooks as sql
from service.db.pool import Database, DatabaseUnavailable
from service.ledger.vault import Vault
from service.webhooks import endpoints, payload, policy, signing, ssrf

log = logging.getLogger("tally.webhooks")

USER_AGENT = "Tally-Webhooks/1"
_ERROR_LENGTH = 300
PURGE_EVERY = 300.0
PURGE_BATCH = 5000


class Dispatcher:
    """Delivers webhooks; `run(stop)` until `stop` is set. See the module docstring."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        settings: Settings,
        *,
        tenants: list[uuid.UUID] | None = None,
        resolver: ssrf.Resolver | None = None,
    ) -> None:
        self.db = db
        self.vault = vault
        self.timeout = settings.webhook_timeout_seconds
        self.schedule = settings.webhook_retry_schedule
        self.threshold = settings.webhook_breaker_threshold
        self.cooldown = settings.webhook_breaker_cooldown_seconds
        self.allow_private = settings.webhook_allow_private
        self.concurrency = settings.webhook_concurrency
        self.poll = settings.webhook_poll_seconds
        self.lease_seconds = settings.webhook_lease_seconds
        self.retention = settings.webhook_delivery_retention_seconds
        self._next_purge = 0.0  # the first pass purges
        # Only these tenants' endpoints (None: all of them).
        self.tenants = list(tenants) if tenants else None
        self.resolver = resolver
        self.stats: Counter[str] = Counter()
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._db_down = False

    async def run(self, stop: asyncio.Event) -> None:
        # No proxies from the environment (they would bypass the SSRF guard),
        # no redirects, and no pooled connections: a TLS connection made for
        # one host name must never carry another host's request.
        async with httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=0),
        ) as client:
            self._client = client
            try:
                while not stop.is_set():
                    try:
                        busy = await self.tick()
                    except Exception:
                        # A failed pass (a deadlock, a bug) must not end the worker:
                        # say so loudly, wait a poll interval, try again.
                        log.exception("webhook dispatcher pass failed; retrying")
                        busy = False
                    if not busy:
                        await self._sleep(stop)
            finally:
                # Let in-flight attempts finish and record (each is bounded by
                # the timeout); a hard kill instead leaves them to the lease.
                if self._inflight:
                    await asyncio.wait(self._inflight, timeout=self.timeout + 5)
                for task in self._inflight:
                    task.cancel()
                self._client = None

    async def tick(self) -> bool:
        """One pass: fan out, claim, start deliveries. True when it found work."""
        try:
            async with self.db.connection() as conn:
                created, _ = await sql.fan_out(conn, self.tenants)
            claimed: list[tuple[Any, ...]] = []
            free = self.concurrency - len(self._inflight)
            if free > 0:
                lease = uuid.uuid4()
                async with self.db.connection() as conn:
                    claimed = await sql.claim(conn, self.tenants, free, lease, self.lease_seconds)
                for row in claimed:
                    task = asyncio.create_task(self._deliver(row, lease))
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
            if time.monotonic() >= self._next_purge:
                await self._upkeep()
        except DatabaseUnavailable as exc:
            if not self._db_down:
                log.error("webhook dispatcher: database unavailable: %s", exc)
            self._db_down = True
            return False
        if self._db_down:
            self._db_down = False
            log.warning("webhook dispatcher: database reachable again")
        self.stats["fanned_out"] += created
        return bool(created or claimed)

    async def _upkeep(self) -> None:
        """The periodic purge; it must never stop deliveries, so an error in it
        (other than an outage, which the caller handles) is logged and retried
        at the next period."""
        try:
            purged = await self.purge()
        except psycopg.Error as exc:
            log.warning("webhook upkeep failed, retrying in %g s: %s", PURGE_EVERY, exc)
            purged = 0
        more = purged == PURGE_BATCH
        self._next_purge = time.monotonic() + (0.0 if more else PURGE_EVERY)

    async def purge(self) -> int:
        """Erase rotated-out secrets past their grace period, and delete up to
        PURGE_BATCH settled deliveries past the retention (0: none); returns how
        many deliveries."""
        async with self.db.connection() as conn:
            await sql.forget_expired_secrets(conn, self.tenants)
            if not self.retention:
                return 0
            purged = await sql.purge_deliveries(conn, self.tenants, self.retention, PURGE_BATCH)
        self.stats["purged"] += purged
        return purged

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _sleep(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _deliver(self, row: tuple[Any, ...], lease: uuid.UUID) -> None:
        (tenant_id, delivery_id, endpoint_id, attempt_count, url, sealed, sealed_previous,
         event_id, sequence, kind, created_at, data) = row  # fmt: skip
        attempt = attempt_count + 1
        at = datetime.now(UTC)
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            secret = await endpoints.open_secret(self.vault, tenant_id, endpoint_id, bytes(sealed))
            previous = None
            if sealed_previous is not None:  # a rotation's grace period: sign with both
                previous = await endpoints.open_secret(
                    self.vault, tenant_id, endpoint_id, bytes(sealed_previous)
                )
            body = payload.event_body(event_id, sequence, kind, created_at, data)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                signing.HEADER: signing.header(secret, body, previous=previous),
                "Tally-Event-Id": str(event_id),
                "Tally-Event-Type": kind,
                "Tally-Delivery-Id": str(delivery_id),
                "Tally-Delivery-Attempt": str(attempt),
            }
            status_code = await self._post(url, body, headers)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
                if 300 <= status_code < 400:
                    error += " (redirects are not followed)"
        except ssrf.UnsafeUrl as exc:
            error = f"refused: {exc}"
        except (httpx.TimeoutException, TimeoutError):
            error = f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (crypto.DecryptionFailed, crypto.UnknownKey):
            error = "the signing secret cannot be opened with the key ring"
        except DatabaseUnavailable:
            return  # the key ring could not load; the lease runs out and it is retried
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", delivery_id)
            error = "internal error while delivering"
        record = {
            "attempt": attempt,
            "at": at,
            "status_code": status_code,
            "latency_ms": int((time.monotonic() - started) * 1000),
            "error": error[:_ERROR_LENGTH] if error else None,
        }
        await self._record(tenant_id, delivery_id, lease, record)

    async def _record(
        self,
        tenant_id: uuid.UUID,
        delivery_id: uuid.UUID,
        lease: uuid.UUID,
        record: dict[str, Any],
    ) -> None:
        try:
            async with self.db.connection() as conn:
                if record["error"] is None:
                    kept = await sql.record_delivered(conn, tenant_id, delivery_id, lease, record)
                    outcome = "delivered"
                else:
                    delay = policy.retry_delay(self.schedule, record["attempt"])
                    kept = await sql.record_failed(
                        conn, tenant_id, delivery_id, lease, record,
                        retry_in=delay, threshold=self.threshold, cooldown=self.cooldown,
                    )  # fmt: skip
                    outcome = "failed" if delay is None else "retrying"
        except DatabaseUnavailable:
            # Unrecorded: the lease runs out and the delivery is attempted again.
            self.stats["unrecorded"] += 1
            return
        except Exception:
            log.exception("webhook delivery %s: outcome not recorded", delivery_id)
            self.stats["unrecorded"] += 1
            return
        if not kept:
            # Our lease ran out and another worker took the delivery over.
            self.stats["lease_lost"] += 1
            log.warning("webhook delivery %s: lease lost, outcome dropped", delivery_id)
            return
        self.stats[outcome] += 1
        if outcome == "retrying":
            outcome = "refused" if record["error"].startswith("refused") else "retry"
        metrics.record_webhook_delivery(outcome)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST to the address the guard just checked; returns the status code."""
        assert self._client is not None
        target = ssrf.parse(url)
        address = (await ssrf.resolve(target, self.allow_private, self.resolver))[0]
        extensions = {}
        if target.scheme == "https" and target.host != str(address):
            # TLS to the checked address, verified against the registered name.
            extensions["sni_hostname"] = target.host
        request = self._client.build_request(
            "POST",
            target.url_for(address),
            content=body,
            headers={**headers, "Host": target.host_header},
            extensions=extensions,
        )
        async with asyncio.timeout(self.timeout):
            response = await self._client.send(request, stream=True)
            await response.aclose()
        return response.status_code


async def run_worker(settings: Settings, tenants: list[uuid.UUID] | None = None) -> None:
    """`tally worker`: dispatch until SIGTERM or SIGINT, then finish in-flight attempts."""
    assert settings.database_url
    db = Database(
        settings.database_url,
        min_size=1,
        max_size=4,
        timeout=settings.db_timeout_seconds,
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    await db.open()
    vault = Vault(db, settings.encryption_key, settings.previous_encryption_keys)
    # httpx logs every request at INFO; attempts are recorded on the delivery rows.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Started by `tally dev`: stop (as on SIGTERM) if it is killed outright.
    orphans.exit_with_server()
    dispatcher = Dispatcher(db, vault, settings, tenants=tenants)
    scope = f"{len(tenants)} tenant(s)" if tenants else "all tenants"
    log.info("webhook worker started (%s)", scope)
    try:
        await dispatcher.run(stop)
    finally:
        with contextlib.suppress(Exception):
            await db.close()
        log.info("webhook worker stopped: %s", dict(dispatcher.stats))
