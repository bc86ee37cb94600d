"""The app factory: routes, middleware, lifespan. Served by granian (`--factory`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import msgspec
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from service import metrics, openapi, orphans
from service.api import accounts, auth, events, ops, statements, transfers, webhooks
from service.api import docs as api_docs
from service.api import usage as api_usage
from service.api.routing import Endpoint, build_routes, direct_routes
from service.auth.clients import ClientDirectory
from service.auth.tokens import TokenService
from service.config import ConfigError, Settings
from service.db.pool import Database, DatabaseUnavailable
from service.errors import EXCEPTION_HANDLERS
from service.ledger import maintenance
from service.ledger.accounts import AccountReader
from service.ledger.statements import EntryReader
from service.ledger.transfers import TransferEngine, TransferReader
from service.ledger.vault import Vault
from service.middleware import Envelope
from service.ratelimit import RateLimiter
from service.tasks import cancel_and_wait
from service.usage import UsageRecorder

VERSION = "0.1.0"
ENDPOINTS: list[Endpoint] = [
    *auth.ENDPOINTS,
    *accounts.ENDPOINTS,
    *statements.ENDPOINTS,
    *transfers.ENDPOINTS,
    *events.ENDPOINTS,
    *webhooks.ENDPOINTS,
    *api_usage.ENDPOINTS,
    *ops.ENDPOINTS,
    *api_docs.ENDPOINTS,
]
# Routed first (see build_routes): the reads and the writes most requests make.
BUSIEST_PATHS = ("/api/accounts/{id}", "/api/transfers", "/api/transfers/{id}")
# Answered by the Envelope without the router (service.middleware.DirectRoute):
# the read that latency-sensitive clients make most.
DIRECT = ("GET /api/accounts/{id}",)


class _AppState(State):
    """Starlette's `State`, each value also kept as a plain attribute.

    The request path reads its services from `request.app.state` (tokens,
    clients, limiter, accounts: four reads a `GET`); a plain attribute is
    found by the normal lookup, where `State` answers through its Python
    `__getattr__` (about 0.4 us a read).
    """

    def __setattr__(self, key: str, value: object) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)


class _Tally(Starlette):
    """Starlette, with its middleware (the Envelope) straight around the router.

    Starlette would put its ServerErrorMiddleware outside and its
    ExceptionMiddleware inside the user's middleware: the Envelope does both
    jobs (service.middleware), and each of those layers would cost every
    request another `send` wrapper.
    """

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


_gc_tuned = False


def _tune_gc() -> None:
    """Once per process (a worker serves one app; a test process makes many).

    Everything built by start-up lives as long as the worker: frozen out of
    the collector's sight, so a full collection stays short (tail latency).
    Requests allocate fast and make few cycles: collect less often.
    """
    global _gc_tuned
    if not _gc_tuned:
        _gc_tuned = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; with no settings, read them from the environment."""
    settings = settings or Settings.from_env()
    if not settings.database_url or not settings.redis_url:
        raise ConfigError(
            "TALLY_DATABASE_URL and TALLY_REDIS_URL are required (`make run` starts "
            "embedded servers and sets them for you)"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Under `tally serve`: drain and exit if the server process is killed.
        orphans.exit_with_server()
        await app.state.db.open()
        # Sign with the newest key from the start; if the database is still
        # down, the static key signs until the first periodic reload.
        with contextlib.suppress(DatabaseUnavailable):
            await app.state.tokens.reload(startup=True)
        engine = app.state.transfers = TransferEngine(
            app.state.db,
            group_commit=settings.group_commit,
            max_batch=settings.batch_max,
            max_inflight=settings.batch_inflight,
        )
        upkeep = asyncio.create_task(
            maintenance.run(
                engine,
                app.state.vault,
                app.state.tokens,
                interval=settings.expiry_interval_seconds,
                key_retention=settings.idempotency_retention_seconds,
            )
        )
        sampler = asyncio.create_task(metrics.sample_forever(app.state.db.pool))
        flusher = asyncio.create_task(
            app.state.usage.run(app.state.db, settings.usage_flush_seconds)
        )
        _tune_gc()
        try:
            yield
        finally:
            await cancel_and_wait(sampler)
            await cancel_and_wait(upkeep)
            await engine.queue.drain()
            logging.getLogger("tally.batcher").info("group commit: %s", engine.queue.stats())
            # Last: the usage counts of every request served, drained ones included.
            await cancel_and_wait(flusher)
            await app.state.db.close()
            metrics.worker_exited()
            await app.state.redis.aclose()

    usage = UsageRecorder()
    routes = build_routes(ENDPOINTS, first=BUSIEST_PATHS)
    app = _Tally(
        routes=routes,
        middleware=[
            Middleware(
                Envelope,
                max_body=settings.max_body_bytes,
                max_batch_body=settings.max_batch_body_bytes,
                body_timeout=settings.body_timeout_seconds,
                handlers=EXCEPTION_HANDLERS,
                usage=usage,
                direct=direct_routes(ENDPOINTS, routes, DIRECT),
            ),
        ],
        lifespan=lifespan,
    )
    # No redirect to "the same path with a slash": it would echo the Host header.
    app.router.redirect_slashes = False
    app.state = _AppState()
    app.state.settings = settings
    app.state.usage = usage
    app.state.db = Database(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_timeout_seconds,
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    app.state.redis = aioredis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    app.state.accounts = AccountReader(app.state.db)
    app.state.transfer_reader = TransferReader(app.state.db)
    app.state.entry_reader = EntryReader(app.state.db)
    masters = (settings.encryption_key, *settings.previous_encryption_keys)
    app.state.tokens = TokenService(settings, app.state.db, masters)
    app.state.vault = Vault(
        app.state.db, settings.encryption_key, settings.previous_encryption_keys
    )
    app.state.limiter = RateLimiter(app.state.redis, fail_closed=settings.rate_limit_fail_closed)
    app.state.clients = ClientDirectory(
        app.state.db,
        rate=settings.rate_limit,
        burst=settings.rate_burst,
        ttl=settings.client_cache_seconds,
    )
    app.state.openapi = msgspec.json.encode(openapi.build(ENDPOINTS, VERSION))
    logging.getLogger("tally").setLevel(logging.INFO)
    return app
