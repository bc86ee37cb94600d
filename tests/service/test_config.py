"""Settings from TALLY_* variables: dev secrets, refusals outside dev mode."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from service.config import ConfigError, Settings

KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
JWT = "j" * 40


def test_production_refuses_to_start_without_secrets(tmp_path):
    with pytest.raises(ConfigError, match="TALLY_JWT_SECRET"):
        Settings.from_env({"TALLY_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="TALLY_ENCRYPTION_KEY"):
        Settings.from_env({"TALLY_JWT_SECRET": JWT})
    assert not (tmp_path / "dev-secrets.json").exists()


def test_dev_mode_generates_secrets_once_and_warns(tmp_path, caplog):
    env = {"TALLY_ENV": "dev", "TALLY_DATA_DIR": str(tmp_path)}
    first = Settings.from_env(env)
    assert "generated" in caplog.text
    second = Settings.from_env(env)
    assert first.jwt_secret == second.jwt_secret and len(first.jwt_secret) >= 32
    assert first.encryption_key == second.encryption_key and len(first.encryption_key) == 32
    stored = json.loads((tmp_path / "dev-secrets.json").read_text())
    assert stored["jwt_secret"] == first.jwt_secret
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o077 == 0


def test_values_are_read_and_validated():
    s = Settings.from_env(
        {
            "TALLY_JWT_SECRET": JWT,
            "TALLY_ENCRYPTION_KEY": KEY,
            "TALLY_PORT": "9000",
            "TALLY_DATABASE_URL": "postgresql://x/y",
            "TALLY_TOKEN_TTL_SECONDS": "60",
            "TALLY_BODY_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert (s.port, s.database_url, s.token_ttl_seconds, s.env) == (
        9000,
        "postgresql://x/y",
        60,
        "production",
    )
    assert s.body_timeout_seconds == 2.5
    assert (
        Settings.from_env(
            {"TALLY_JWT_SECRET": JWT, "TALLY_ENCRYPTION_KEY": KEY}
        ).body_timeout_seconds
        == 30
    )
    assert s.jwt_kid and JWT not in s.jwt_kid
    assert (s.jwt_algorithm, s.previous_encryption_keys) == ("HS256", ())


@pytest.mark.parametrize(
    "raw, kept", [(None, 30 * 24 * 3600), ("0", 0), ("3600", 3600), ("604800", 604800)]
)
def test_webhook_delivery_retention(raw, kept):
    env = {"TALLY_JWT_SECRET": JWT, "TALLY_ENCRYPTION_KEY": KEY}
    if raw is not None:
        env["TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS"] = raw
    assert Settings.from_env(env).webhook_delivery_retention_seconds == kept


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "json"),
        ({"TALLY_ENV": "dev"}, "text"),
        ({"TALLY_ENV": "dev", "TALLY_LOG_FORMAT": "json"}, "json"),
        ({"TALLY_LOG_FORMAT": "text"}, "text"),
    ],
)
def test_log_format_is_text_in_dev_mode_unless_asked(tmp_path, env, expected):
    base = {"TALLY_JWT_SECRET": JWT, "TALLY_ENCRYPTION_KEY": KEY, "TALLY_DATA_DIR": str(tmp_path)}
    assert Settings.from_env({**base, **env}).log_format == expected


def test_master_key_rotation_settings():
    old = [secrets.token_bytes(32) for _ in range(2)]
    s = Settings.from_env(
        {
            "TALLY_JWT_SECRET": JWT,
            "TALLY_ENCRYPTION_KEY": KEY,
            "TALLY_JWT_ALGORITHM": "EdDSA",
            "TALLY_PREVIOUS_ENCRYPTION_KEYS": " , ".join(
                base64.urlsafe_b64encode(k).decode() for k in old
            ),
        }
    )
    assert s.jwt_algorithm == "EdDSA"
    assert s.previous_encryption_keys == tuple(old)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"TALLY_PORT": "eighty"}, "TALLY_PORT"),
        ({"TALLY_PORT": "-1"}, "TALLY_PORT"),
        ({"TALLY_ENV": "staging"}, "TALLY_ENV"),
        ({"TALLY_JWT_SECRET": "short"}, "at least 32"),
        ({"TALLY_ENCRYPTION_KEY": "abc"}, "32 bytes"),
        ({"TALLY_DB_TIMEOUT_SECONDS": "0"}, "positive"),
        ({"TALLY_BODY_TIMEOUT_SECONDS": "-1"}, "TALLY_BODY_TIMEOUT_SECONDS must be positive"),
        ({"TALLY_BODY_TIMEOUT_SECONDS": "soon"}, "TALLY_BODY_TIMEOUT_SECONDS must be a number"),
        ({"TALLY_JWT_ALGORITHM": "none"}, "HS256 or EdDSA"),
        ({"TALLY_JWT_ALGORITHM": "RS256"}, "HS256 or EdDSA"),
        ({"TALLY_PREVIOUS_ENCRYPTION_KEYS": "abc"}, "TALLY_PREVIOUS_ENCRYPTION_KEYS"),
        ({"TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS": "60"}, "0 \\(keep them\\) or at least"),
        ({"TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS": "-1"}, "RETENTION_SECONDS"),
        ({"TALLY_WEBHOOK_DELIVERY_RETENTION_SECONDS": "a week"}, "RETENTION_SECONDS"),
    ],
)
def test_bad_values_are_refused(changes, message):
    env = {"TALLY_JWT_SECRET": JWT, "TALLY_ENCRYPTION_KEY": KEY, **changes}
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_granian_gets_the_runtime_threads(monkeypatch):
    import granian

    from service import cli, orphans
    from service import metrics as prometheus

    captured: dict = {}

    class _Granian:
        def __init__(self, target: str, **kwargs: object) -> None:
            captured.update(kwargs)

        def serve(self) -> None:
            pass

    monkeypatch.setattr(granian, "Granian", _Granian)
    monkeypatch.setattr(prometheus, "prepare_multiprocess_dir", lambda: "")
    monkeypatch.setenv(orphans.SERVER_PID_ENV, "0")  # _serve sets it: restored after
    env = {"TALLY_JWT_SECRET": JWT, "TALLY_ENCRYPTION_KEY": KEY, "TALLY_WORKERS": "2"}
    cli._serve(Settings.from_env(env))
    assert captured["runtime_threads"] == 2 and captured["workers"] == 2
    cli._serve(Settings.from_env({**env, "TALLY_RUNTIME_THREADS": "3"}))
    assert captured["runtime_threads"] == 3
    with pytest.raises(ConfigError, match="TALLY_RUNTIME_THREADS"):
        Settings.from_env({**env, "TALLY_RUNTIME_THREADS": "many"})
