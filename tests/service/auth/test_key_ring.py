"""Token signing keys on the ring (rotate, verify old, expire, retire, EdDSA) and
master-key rotation. Each test gets its own database: the ring is service-wide,
so rotating it in the session database would change every other test's tokens.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from service import crypto
from service.auth import signing
from service.auth.tokens import InvalidToken, TokenService
from service.config import Settings
from service.db.pool import Database
from service.ledger import vault as vault_module
from service.ledger.vault import Vault
from tests.conftest import fresh_database, make_tenant, serving

HOLDER = {"name": "Ada", "email": "ada@example.com", "tax_id": "GB1"}


@pytest.fixture
def own_db(servers) -> Iterator[str]:
    with fresh_database(servers[0], "tally_keys") as url:
        yield url


@pytest.fixture
def ring_settings(settings: Settings, own_db: str) -> Settings:
    return settings.with_overrides(database_url=own_db)


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Database]:
    db = Database(url, min_size=1, max_size=2)
    await db.pool.open(wait=True)
    try:
        yield db
    finally:
        await db.close()


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


async def get_accounts(http: httpx.AsyncClient, token: str) -> int:
    r = await http.get("/api/accounts", headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 200:
        assert r.json()["error"]["code"] == "UNAUTHENTICATED", r.text
    return r.status_code


def stored(kid: str, algorithm: str, created: datetime, retired: bool = False):
    return signing.StoredKey(kid, algorithm, signing.new_material(algorithm), created, retired)


def test_ring_newest_signs_superseded_verify_for_a_token_lifetime():
    static = signing.static_key(Settings(jwt_secret="s" * 40))
    t1 = datetime(2026, 1, 1, tzinfo=UTC)
    t2 = t1 + timedelta(hours=1)
    ring = signing.build_ring(
        static, [stored("j1", "HS256", t1), stored("j2", "EdDSA", t2)], token_ttl=900
    )
    assert ring.active.kid == "j2" and ring.active.algorithm == "EdDSA"
    grace = 900 + signing.GRACE_SECONDS
    assert ring.keys[static.kid].valid_until == t1.timestamp() + grace
    assert ring.keys["j1"].valid_until == t2.timestamp() + grace
    assert ring.keys["j2"].valid_until is None
    assert ring.verifier("j1", t2.timestamp() + grace - 1) is not None
    assert ring.verifier("j1", t2.timestamp() + grace + 1) is None
    assert ring.verifier("nope", t1.timestamp()) is None


def test_ring_leaves_retired_keys_out():
    static = signing.static_key(Settings(jwt_secret="s" * 40))
    now = datetime.now(UTC)
    ring = signing.build_ring(
        static, [stored("j1", "HS256", now, retired=True), stored("j2", "HS256", now)], 900
    )
    assert "j1" not in ring.keys and ring.active.kid == "j2"
    assert static.kid in ring.keys


async def test_rotation_reaches_every_worker_and_old_tokens_keep_working(ring_settings):
    async with serving(ring_settings) as (a, http_a):
        tenant = await make_tenant(a)
        before = tenant.token()
        assert kid_of(before) == ring_settings.jwt_kid  # the static key signs at first
        new_kid = await signing.rotate(a.state.db, ring_settings.encryption_key, "HS256")
        # Worker B starts after the rotation and signs with the new key at once.
        async with serving(ring_settings) as (b, http_b):
            after = b.state.tokens.issue(tenant.client_id, tenant.tenant_id, ("ledger:read",))
            assert kid_of(after) == new_kid
            assert await get_accounts(http_b, before) == 200  # the old key still verifies
        # Worker A has not reloaded yet: the unknown kid makes it reload on the spot.
        assert await get_accounts(http_a, after) == 200
        assert a.state.tokens.active_kid == new_kid
        assert kid_of(tenant.token()) == new_kid
        assert await get_accounts(http_a, before) == 200


async def test_superseded_key_stops_verifying_after_a_token_lifetime(ring_settings):
    async with serving(ring_settings) as (a, http):
        tenant = await make_tenant(a)
        old = tenant.token()
        new_kid = await signing.rotate(a.state.db, ring_settings.encryption_key, "HS256")
        async with a.state.db.connection() as conn:
            # As if the rotation happened longer ago than a token lifetime + grace.
            await conn.execute(
                "UPDATE keys SET created_at = created_at - make_interval(secs => %s) WHERE id = %s",
                (ring_settings.token_ttl_seconds + signing.GRACE_SECONDS + 5, new_kid),
            )
        await a.state.tokens.reload()
        assert await get_accounts(http, old) == 401
        assert await get_accounts(http, tenant.token()) == 200


async def test_retired_key_stops_at_once_and_the_newest_cannot_be_retired(ring_settings):
    async with serving(ring_settings) as (a, http):
        tenant = await make_tenant(a)
        first = await signing.rotate(a.state.db, ring_settings.encryption_key, "HS256")
        await a.state.tokens.reload()
        under_first = tenant.token()
        assert kid_of(under_first) == first
        assert await get_accounts(http, under_first) == 200  # now cached as verified
        second = await signing.rotate(a.state.db, ring_settings.encryption_key, "HS256")
        assert not await signing.retire(a.state.db, second)  # the newest signs: refused
        assert not await signing.retire(a.state.db, "j-unknown")
        assert await signing.retire(a.state.db, first)
        assert not await signing.retire(a.state.db, first)  # once
        await a.state.tokens.reload()
        assert await get_accounts(http, under_first) == 401  # the cache was dropped too
        assert kid_of(tenant.token()) == second
        assert await get_accounts(http, tenant.token()) == 200


async def test_unknown_kids_reload_at_most_once_a_second(ring_settings):
    """Tokens under made-up key ids cannot turn into a database query each."""
    async with database(ring_settings.database_url) as db:
        tokens = TokenService(ring_settings, db, (ring_settings.encryption_key,))
        claims = jwt.decode(
            tokens.issue(uuid.uuid4(), uuid.uuid4(), ("ledger:read",)),
            options={"verify_signature": False},
            algorithms=["HS256"],
        )
        calls = 0
        real = signing.load

        async def counting(*args, **kwargs):
            nonlocal calls
            calls += 1
            return await real(*args, **kwargs)

        signing.load = counting
        try:
            for _ in range(20):
                forged = jwt.encode(
                    claims, "k" * 64, algorithm="HS256", headers={"kid": secrets.token_hex(6)}
                )
                with pytest.raises(InvalidToken):
                    await tokens.verify_async(forged)
        finally:
            signing.load = real
        assert calls == 1


async def test_eddsa_signing_and_algorithm_confusion_refused(ring_settings):
    eddsa = ring_settings.with_overrides(jwt_algorithm="EdDSA")
    async with serving(eddsa) as (a, http):
        tenant = await make_tenant(a)
        token = tenant.token()
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "EdDSA" and header["kid"].startswith("j")
        assert await get_accounts(http, token) == 200
        claims = jwt.decode(token, options={"verify_signature": False}, algorithms=["EdDSA"])
        claims["jti"] = uuid.uuid4().hex
        key = a.state.tokens._ring.keys[header["kid"]]
        public_raw = key.verifying.public_bytes_raw()
        # The public key used as an HMAC secret under the EdDSA key's id.
        confused = jwt.encode(claims, public_raw, algorithm="HS256", headers={"kid": header["kid"]})
        assert await get_accounts(http, confused) == 401
        # An EdDSA-looking header on the HS256 static key's id.
        other = signing.new_material("EdDSA")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        forged = jwt.encode(
            claims,
            Ed25519PrivateKey.from_private_bytes(other),
            algorithm="EdDSA",
            headers={"kid": eddsa.jwt_kid},
        )
        assert await get_accounts(http, forged) == 401
        # A second worker starting with the same setting adds no further key.
        async with serving(eddsa) as (b, _):
            assert b.state.tokens.active_kid == header["kid"]


async def test_master_key_rotation_reseals_every_key(ring_settings):
    old_master = ring_settings.encryption_key
    new_master = secrets.token_bytes(32)
    async with serving(ring_settings) as (a, http):
        tenant = await make_tenant(a)
        r = await http.post(
            "/api/accounts",
            json={"name": "p", "currency": "USD", "holder": HOLDER},
            headers=tenant.headers(),
        )
        assert r.status_code == 201, r.text
        account_id = uuid.UUID(r.json()["data"]["id"])
        jwt_kid = await signing.rotate(a.state.db, old_master, "EdDSA")
    async with database(ring_settings.database_url) as db:
        with pytest.raises(crypto.DecryptionFailed):  # a wrong master changes nothing
            await vault_module.rotate_master(db, new_master, (secrets.token_bytes(32),))
        assert await vault_module.rotate_master(db, new_master, (old_master,)) == 2
        assert await vault_module.rotate_master(db, new_master, (old_master,)) == 2  # rerun
        with pytest.raises(crypto.DecryptionFailed):
            await Vault(db, old_master).load()
        async with db.connection() as conn:
            cur = await conn.execute(
                "SELECT holder FROM accounts WHERE tenant_id = %s AND id = %s",
                (tenant.tenant_id, account_id),
            )
            (sealed,) = await cur.fetchone()
        assert (
            await Vault(db, new_master).open_holder(tenant.tenant_id, account_id, bytes(sealed))
            == HOLDER
        )
        tokens = TokenService(ring_settings, db, (new_master,))
        await tokens.reload()
        assert tokens.active_kid == jwt_kid
    # The whole service runs on the new master key alone.
    async with serving(ring_settings.with_overrides(encryption_key=new_master)) as (_, http):
        r = await http.get(f"/api/accounts/{account_id}", headers=tenant.headers())
        assert r.status_code == 200 and r.json()["data"]["holder"] == HOLDER


@pytest.fixture
def tally_keys(own_db, repo_root, ring_settings):
    def run(*args: str, ok: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "TALLY_DATABASE_URL": own_db,
            "TALLY_ENV": "test",
            "TALLY_JWT_SECRET": ring_settings.jwt_secret,
            "TALLY_ENCRYPTION_KEY": b64(ring_settings.encryption_key),
            **extra,
        }
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", "keys", *args],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (proc.returncode == 0) is ok, proc.stderr
        return proc

    return run


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def test_cli_rotate_list_retire_and_rotate_master(tally_keys, ring_settings):
    first = tally_keys("rotate-jwt").stdout.split()[-1]
    second = tally_keys("rotate-jwt", "--algorithm", "EdDSA").stdout.split()[-1]
    assert "EdDSA" in tally_keys("rotate-jwt", "--algorithm", "EdDSA").stdout
    assert "no live signing key" in tally_keys("retire-jwt", "nope", ok=False).stderr
    assert f"retired signing key {first}" in tally_keys("retire-jwt", first).stdout
    listing = tally_keys("list").stdout
    rows = {line.split("\t")[0]: line.split("\t") for line in listing.splitlines()}
    assert rows[first][1:3] == ["jwt", "HS256"] and rows[first][4].startswith("retired")
    assert rows[second][1:3] == ["jwt", "EdDSA"] and rows[second][4] == "live"
    for secret in (ring_settings.jwt_secret, b64(ring_settings.encryption_key)):
        assert secret not in listing
    assert "TALLY_PREVIOUS_ENCRYPTION_KEYS" in tally_keys("rotate-master", ok=False).stderr
    new = secrets.token_bytes(32)
    wrong = tally_keys(
        "rotate-master",
        ok=False,
        TALLY_ENCRYPTION_KEY=b64(new),
        TALLY_PREVIOUS_ENCRYPTION_KEYS=b64(secrets.token_bytes(32)),
    )
    assert "nothing was changed" in wrong.stderr
    done = tally_keys(
        "rotate-master",
        TALLY_ENCRYPTION_KEY=b64(new),
        TALLY_PREVIOUS_ENCRYPTION_KEYS=b64(ring_settings.encryption_key),
    )
    assert "re-sealed 3 keys" in done.stdout
    bad = tally_keys("rotate-jwt", ok=False, TALLY_PREVIOUS_ENCRYPTION_KEYS="bm90IDMy")
    assert "TALLY_PREVIOUS_ENCRYPTION_KEYS" in bad.stderr


async def test_jwks_publishes_eddsa_public_keys_only(ring_settings):
    async with serving(ring_settings) as (a, http):
        r = await http.get("/.well-known/jwks.json")
        assert r.status_code == 200 and r.json() == {"keys": []}  # HS256: nothing to publish
        assert "max-age" in r.headers["cache-control"]
    eddsa = ring_settings.with_overrides(jwt_algorithm="EdDSA")
    async with serving(eddsa) as (a, http):
        tenant = await make_tenant(a)
        token = tenant.token()
        published = (await http.get("/.well-known/jwks.json")).json()["keys"]
        assert [k["kid"] for k in published] == [kid_of(token)]
        assert set(published[0]) == {"kty", "crv", "x", "kid", "alg", "use"}
        # Anyone holding the JWK can verify the token; nothing secret was shown.
        public = jwt.PyJWK(published[0]).key
        claims = jwt.decode(
            token,
            public,
            algorithms=["EdDSA"],
            audience=eddsa.jwt_audience,
            issuer=eddsa.jwt_issuer,
        )
        assert claims["tid"] == str(tenant.tenant_id)
        assert ring_settings.jwt_secret not in r.text
