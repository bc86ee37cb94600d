"""TokenService: issue, verify, and the verified-token cache."""

from __future__ import annotations

import time
import uuid

import pytest

from service.auth import tokens
from service.auth.tokens import InvalidToken, TokenService
from service.config import Settings


@pytest.fixture
def service() -> TokenService:
    return TokenService(Settings(jwt_secret="s" * 40, token_ttl_seconds=60))


def test_round_trip(service):
    client, tenant = uuid.uuid4(), uuid.uuid4()
    principal = service.verify(service.issue(client, tenant, ("ledger:read",)))
    assert principal.client_id == str(client)
    assert principal.tenant_id == tenant
    assert principal.scopes == frozenset({"ledger:read"})


def test_cached_token_still_expires(service, monkeypatch):
    token = service.issue(uuid.uuid4(), uuid.uuid4(), ("ledger:read",))
    service.verify(token)  # verified and cached
    later = time.time() + 61
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    with pytest.raises(InvalidToken):
        service.verify(token)
    # Evicted: a later call goes through the full check (pyjwt's own clock).
    assert token not in service._verified


def test_tampered_token_is_not_served_from_the_cache(service):
    token = service.issue(uuid.uuid4(), uuid.uuid4(), ("ledger:read",))
    service.verify(token)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}AA"
    with pytest.raises(InvalidToken):
        service.verify(forged)


def test_cached_answers_only_for_a_token_verified_before(service, monkeypatch):
    token = service.issue(uuid.uuid4(), uuid.uuid4(), ("ledger:read",))
    assert service.cached(token) is None  # never verified: ask verify
    principal = service.verify(token)
    assert service.cached(token) == principal
    assert service.cached(token + "x") is None
    later = time.time() + 61
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    assert service.cached(token) is None  # expired: verify says why
