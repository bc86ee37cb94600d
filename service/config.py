"""One frozen settings object, read once from TALLY_* environment variables.

Nothing below this module reads the environment: the app factory, the CLI and
the tests build a `Settings` and hand it down.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("tally.config")

DEV = "dev"
ENVIRONMENTS = (DEV, "test", "production")


# Seconds between a webhook delivery's attempts (before jitter): 11 attempts over ~24 h.
WEBHOOK_RETRY_SCHEDULE = (
    5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0
)  # fmt: skip


class ConfigError(Exception):
    """The environment does not describe a runnable service."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be configured with; see README "Configuration"."""

    env: str = "production"
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".tally")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    runtime_threads: int = 2
    jwt_secret: str = ""
    jwt_issuer: str = "tally"
    jwt_audience: str = "tally-api"
    jwt_algorithm: str = "HS256"
    token_ttl_seconds: int = 900
    encryption_key: bytes = b""
    previous_encryption_keys: tuple[bytes, ...] = ()
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_timeout_seconds: float = 2.0
    statement_timeout_ms: int = 5000
    redis_timeout_seconds: float = 0.5
    max_body_bytes: int = 64 * 1024
    max_batch_body_bytes: int = 2 * 1024 * 1024
    body_timeout_seconds: float = 30.0
    retry_after_seconds: int = 1
    shutdown_timeout_seconds: int = 10
    tls_cert: Path | None = None
    tls_key: Path | None = None
    rate_limit: float = 1000.0
    rate_burst: int = 2000
    auth_rate_limit: float = 5.0
    auth_rate_burst: int = 20
    rate_limit_fail_closed: bool = False
    client_cache_seconds: float = 30.0
    group_commit: bool = True
    batch_max: int = 512
    batch_inflight: int = 1
    expiry_interval_seconds: float = 1.0
    idempotency_retention_seconds: int = 24 * 3600
    # Webhooks (see docs/webhooks.md).
    webhook_timeout_seconds: float = 5.0
    webhook_retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE
    webhook_breaker_threshold: int = 5
    webhook_breaker_cooldown_seconds: float = 60.0
    webhook_allow_private: bool = False
    webhook_concurrency: int = 32
    webhook_poll_seconds: float = 0.5
    webhook_lease_seconds: float = 60.0
    # Delivered or given-up deliveries are deleted this long after they were
    # created (0: kept for ever).
    webhook_delivery_retention_seconds: int = 30 * 24 * 3600
    # Operations (see docs/operations.md).
    log_format: str = "json"
    metrics_token: str = ""
    usage_flush_seconds: float = 10.0

    @property
    def is_dev(self) -> bool:
        return self.env == DEV

    @property
    def jwt_kid(self) -> str:
        """Key id put in every token header: a digest of the key, never the key."""
        import hashlib

        return hashlib.sha256(self.jwt_secret.encode()).hexdigest()[:12]

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read settings from TALLY_* variables; dev mode fills in missing secrets."""
        env = dict(os.environ if environ is None else environ)
        mode = env.get("TALLY_ENV", "production")
        if mode not in ENVIRONMENTS:
            raise ConfigError(f"TALLY_ENV must be one of {', '.join(ENVIRONMENTS)}, not {mode!r}")
        data_dir = Path(env.get("TALLY_DATA_DIR", ".tally"))
        jwt_secret = env.get("TALLY_JWT_SECRET", "")
        enc_key = env.get("TALLY_ENCRYPTION_KEY", "")
        if (not jwt_secret or not enc_key) and mode == DEV:
            dev = _dev_secrets(data_dir)
            jwt_secret = jwt_secret or dev["jwt_secret"]
            enc_key = enc_key or dev["encryption_key"]
        if not jwt_secret:
            raise ConfigError("TALLY_JWT_SECRET is required outside dev mode")
        if len(jwt_secret) < 32:
            raise ConfigError("TALLY_JWT_SECRET must be at least 32 characters")
        if not enc_key:
            raise ConfigError("TALLY_ENCRYPTION_KEY is required outside dev mode")
        jwt_algorithm = env.get("TALLY_JWT_ALGORITHM", "HS256")
        if jwt_algorithm not in ("HS256", "EdDSA"):
            raise ConfigError(f"TALLY_JWT_ALGORITHM must be HS256 or EdDSA, not {jwt_algorithm!r}")
        previous = tuple(
            _decode_key(part, "TALLY_PREVIOUS_ENCRYPTION_KEYS")
            for part in env.get("TALLY_PREVIOUS_ENCRYPTION_KEYS", "").split(",")
            if part.strip()
        )
        if bool(env.get("TALLY_TLS_CERT")) != bool(env.get("TALLY_TLS_KEY")):
            raise ConfigError("TALLY_TLS_CERT and TALLY_TLS_KEY go together")
        d = cls()  # the defaults (slots make class attributes descriptors)
        return cls(
            env=mode,
            database_url=env.get("TALLY_DATABASE_URL") or None,
            redis_url=env.get("TALLY_REDIS_URL") or None,
            data_dir=data_dir,
            host=env.get("TALLY_HOST", d.host),
            port=_int(env, "TALLY_PORT", d.port),
            workers=_int(env, "TALLY_WORKERS", os.cpu_count() or 1),
            runtime_threads=_int(env, "TALLY_RUNTIME_THREADS", d.runtime_threads),
            jwt_secret=jwt_secret,
            jwt_issuer=env.get("TALLY_JWT_ISSUER", d.jwt_issuer),
            jwt_audience=env.get("TALLY_JWT_AUDIENCE", d.jwt_audience),
            jwt_algorithm=jwt_algorithm,
            token_ttl_seconds=_int(env, "TALLY_TOKEN_TTL_SECONDS", d.token_ttl_seconds),
            encryption_key=_decode_key(enc_key),
            previous_encryption_keys=previous,
            db_pool_min=_int(env, "TALLY_DB_POOL_MIN", d.db_pool_min),
            db_pool_max=_int(env, "TALLY_DB_POOL_MAX", d.db_pool_max),
            db_timeout_seconds=_float(env, "TALLY_DB_TIMEOUT_SECONDS", d.db_timeout_seconds),
            statement_timeout_ms=_int(env, "TALLY_STATEMENT_TIMEOUT_MS", d.statement_timeout_ms),
            tls_cert=_path(env, "TALLY_TLS_CERT"),
            tls_key=_path(env, "TALLY_TLS_KEY"),
            rate_limit=_float(env, "TALLY_RATE_LIMIT", d.rate_limit),
            rate_burst=max(1, _int(env, "TALLY_RATE_BURST", d.rate_burst)),
            auth_rate_limit=_float(env, "TALLY_AUTH_RATE_LIMIT", d.auth_rate_limit),
            auth_rate_burst=max(1, _int(env, "TALLY_AUTH_RATE_BURST", d.auth_rate_burst)),
            rate_limit_fail_closed=_flag(env, "TALLY_RATE_LIMIT_FAIL_CLOSED", False),
            client_cache_seconds=_float(env, "TALLY_CLIENT_CACHE_SECONDS", d.client_cache_seconds),
            group_commit=_flag(env, "TALLY_GROUP_COMMIT", True),
            batch_max=max(1, _int(env, "TALLY_BATCH_MAX", d.batch_max)),
            batch_inflight=max(1, _int(env, "TALLY_BATCH_INFLIGHT", d.batch_inflight)),
            expiry_interval_seconds=_float(
                env, "TALLY_EXPIRY_INTERVAL_SECONDS", d.expiry_interval_seconds
            ),
            idempotency_retention_seconds=max(
                24 * 3600,
                _int(env, "TALLY_IDEMPOTENCY_RETENTION_SECONDS", d.idempotency_retention_seconds),
            ),
            shutdown_timeout_seconds=_int(
                env, "TALLY_SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_timeout_seconds
            ),
            redis_timeout_seconds=_float(
                env, "TALLY_REDIS_TIMEOUT_SECONDS", d.redis_timeout_seconds
            ),
            body_timeout_seconds=_float(env, "TALLY_BODY_TIMEOUT_SECONDS", d.body_timeout_seconds),
            **_webhook_settings(env, d, mode),
            **_ops_settings(env, d),
        )


def _webhook_settings(env: dict[str, str], d: Settings, mode: str) -> dict[str, Any]:
    allow_private = _flag(env, "TALLY_WEBHOOK_ALLOW_PRIVATE", False)
    if allow_private and mode not in (DEV, "test"):
        raise ConfigError("TALLY_WEBHOOK_ALLOW_PRIVATE=1 is for dev and test only")
    timeout = _float(env, "TALLY_WEBHOOK_TIMEOUT_SECONDS", d.webhook_timeout_seconds)
    lease = _float(env, "TALLY_WEBHOOK_LEASE_SECONDS", d.webhook_lease_seconds)
    if lease <= timeout:
        # A lease shorter than an attempt would hand a live delivery to another worker.
        raise ConfigError("TALLY_WEBHOOK_LEASE_SECONDS must exceed TALLY_WEBHOOK_TIMEOUT_SECONDS")
    retention = _int(
        env, "TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS", d.webhook_delivery_retention_seconds
    )
    if 0 < retention < 3600:
        raise ConfigError(
            "TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS must be 0 (keep them) or at least 3600"
        )
    return {
        "webhook_timeout_seconds": timeout,
        "webhook_retry_schedule": _schedule(env, "TALLY_WEBHOOK_RETRY_SCHEDULE"),
        "webhook_breaker_threshold": max(
            1, _int(env, "TALLY_WEBHOOK_BREAKER_THRESHOLD", d.webhook_breaker_threshold)
        ),
        "webhook_breaker_cooldown_seconds": _float(
            env, "TALLY_WEBHOOK_BREAKER_COOLDOWN_SECONDS", d.webhook_breaker_cooldown_seconds
        ),
        "webhook_allow_private": allow_private,
        "webhook_concurrency": max(
            1, _int(env, "TALLY_WEBHOOK_CONCURRENCY", d.webhook_concurrency)
        ),
        "webhook_poll_seconds": _float(env, "TALLY_WEBHOOK_POLL_SECONDS", d.webhook_poll_seconds),
        "webhook_lease_seconds": lease,
        "webhook_delivery_retention_seconds": retention,
    }


def chosen_log_format(env: Mapping[str, str]) -> str:
    """TALLY_LOG_FORMAT as given (unchecked), else JSON lines, or plain text in dev
    mode: people read dev logs (`make run`)."""
    mode = env.get("TALLY_ENV", "production")
    return env.get("TALLY_LOG_FORMAT") or ("text" if mode == DEV else "json")


def _ops_settings(env: dict[str, str], d: Settings) -> dict[str, Any]:
    log_format = chosen_log_format(env)
    if log_format not in ("json", "text"):
        raise ConfigError(f"TALLY_LOG_FORMAT must be json or text, not {log_format!r}")
    token = env.get("TALLY_METRICS_TOKEN", "")
    if token and len(token) < 16:
        raise ConfigError("TALLY_METRICS_TOKEN must be at least 16 characters")
    return {
        "log_format": log_format,
        "metrics_token": token,
        "usage_flush_seconds": _float(env, "TALLY_USAGE_FLUSH_SECONDS", d.usage_flush_seconds),
    }


def _schedule(env: dict[str, str], name: str) -> tuple[float, ...]:
    """Comma-separated seconds, e.g. "5,30,120"; empty or "none" means no retries."""
    raw = env.get(name)
    if raw is None:
        return WEBHOOK_RETRY_SCHEDULE
    if raw.strip().lower() in ("", "none"):
        return ()
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, not {raw!r}") from None
    if len(delays) > 50 or not all(0 < x <= 7 * 24 * 3600 for x in delays):
        raise ConfigError(f"{name}: at most 50 delays, each over 0 and at most 7 days")
    return delays


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name}: no such file {raw!r}")
    return path


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, not {raw!r}")


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be positive")
    return value


def _decode_key(raw: str, name: str = "TALLY_ENCRYPTION_KEY") -> bytes:
    raw = raw.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError:
        raise ConfigError(f"{name} must be URL-safe base64") from None
    if len(key) != 32:
        raise ConfigError(f"{name} must decode to 32 bytes (AES-256)")
    return key


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    """Load, or create once, the dev-only secrets under the data directory."""
    path = data_dir / "dev-secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    data_dir.mkdir(parents=True, exist_ok=True)
    created = {
        "jwt_secret": secrets.token_urlsafe(48),
        "encryption_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its secrets
        return _dev_secrets(data_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump(created, fh)
    log.warning(
        "dev mode: generated a JWT signing key and an encryption key into %s; "
        "never use these outside development",
        path,
    )
    return created
