"""Token signing keys: a ring in which several keys verify and the newest signs.

The ring starts with the static key from TALLY_JWT_SECRET (HS256; its key id
is a digest of the secret). `tally keys rotate-jwt` adds a key, HS256 or
EdDSA (Ed25519), to the `keys` table, sealed with the master key like the
data keys. The newest key signs; workers pick it up on their periodic reload
and at once when they meet a token whose key id they do not know.

A superseded key keeps verifying for one token lifetime plus a grace period
(the tokens it signed expire by then), then drops out of the ring on its own.
`tally keys retire-jwt KID` drops one at once, for a leaked key.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service import crypto
from service.config import Settings
from service.db import keys as sql
from service.db.pool import Database

HS256 = "HS256"
EDDSA = "EdDSA"
ALGORITHMS = (HS256, EDDSA)
JWT = "jwt"
# How often workers reload the ring, and the margin a superseded key keeps
# past the last token it can have signed (a worker may sign with it until
# its next reload).
RELOAD_SECONDS = 30.0
GRACE_SECONDS = 2 * RELOAD_SECONDS


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    signing: Any  # bytes (HS256) or Ed25519PrivateKey
    verifying: Any  # bytes (HS256) or Ed25519PublicKey
    valid_until: float | None = None  # Unix time it stops verifying; None: no end

    @classmethod
    def from_material(
        cls, kid: str, algorithm: str, material: bytes, valid_until: float | None = None
    ) -> SigningKey:
        if algorithm == HS256:
            return cls(kid, HS256, material, material, valid_until)
        if algorithm == EDDSA:
            private = Ed25519PrivateKey.from_private_bytes(material)
            return cls(kid, EDDSA, private, private.public_key(), valid_until)
        raise ValueError(f"unknown signing algorithm {algorithm!r}")


def static_key(settings: Settings) -> SigningKey:
    """The HS256 key configured by TALLY_JWT_SECRET (its id: `Settings.jwt_kid`)."""
    secret = settings.jwt_secret.encode()
    return SigningKey(settings.jwt_kid, HS256, secret, secret)


def new_material(algorithm: str) -> bytes:
    if algorithm == HS256:
        return secrets.token_bytes(64)
    if algorithm == EDDSA:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    raise ValueError(f"unknown signing algorithm {algorithm!r}")


@dataclass(frozen=True, slots=True)
class StoredKey:
    kid: str
    algorithm: str
    material: bytes
    created_at: datetime
    retired: bool


@dataclass(frozen=True)
class SigningRing:
    keys: dict[str, SigningKey]
    active: SigningKey

    def verifier(self, kid: str, now: float) -> SigningKey | None:
        """The key that may verify a token naming `kid` at `now`, if any."""
        key = self.keys.get(kid)
        if key is None or (key.valid_until is not None and now > key.valid_until):
            return None
        return key

    def fingerprint(self) -> frozenset[tuple[str, float | None]]:
        return frozenset((k.kid, k.valid_until) for k in self.keys.values())


def build_ring(static: SigningKey, stored: list[StoredKey], token_ttl: float) -> SigningRing:
    """The static key, then the stored keys oldest first; the last one signs.

    Each key verifies until its successor's creation plus a token lifetime
    and the grace period; retired keys verify nothing.
    """
    chain: list[tuple[SigningKey, bool]] = [(static, False)]
    starts: list[float] = []
    for row in stored:
        chain.append((SigningKey.from_material(row.kid, row.algorithm, row.material), row.retired))
        starts.append(row.created_at.timestamp())
    keys: dict[str, SigningKey] = {}
    for index, (key, retired) in enumerate(chain):
        if retired:
            continue
        if index < len(starts):  # superseded by chain[index + 1]
            until = starts[index] + token_ttl + GRACE_SECONDS
            key = SigningKey(key.kid, key.algorithm, key.signing, key.verifying, until)
        keys[key.kid] = key
    return SigningRing(keys, chain[-1][0])


async def load(
    db: Database, masters: tuple[bytes, ...], *, algorithm: str | None = None
) -> list[StoredKey]:
    """The stored signing keys, opened with the master key(s).

    With `algorithm`, a key of that algorithm is added first when the newest
    key (or, with none stored, the static HS256 key) is of another one: this
    is how setting TALLY_JWT_ALGORITHM=EdDSA takes effect.
    """
    async with db.connection() as conn, conn.transaction():
        rows = await sql.load_signing(conn)
        current = rows[-1][1] if rows else HS256
        if algorithm is not None and current != algorithm:
            await sql.lock(conn)
            rows = await sql.load_signing(conn)
            current = rows[-1][1] if rows else HS256
            if current != algorithm:
                await _add(conn, masters[0], algorithm)
                rows = await sql.load_signing(conn)
    return [
        StoredKey(kid, alg, crypto.open_key(masters, kid, sealed), created, retired is not None)
        for kid, alg, sealed, created, retired in rows
    ]


async def rotate(db: Database, master_key: bytes, algorithm: str) -> str:
    """Add a signing key; it signs from the workers' next reload on."""
    async with db.connection() as conn, conn.transaction():
        await sql.lock(conn)
        return await _add(conn, master_key, algorithm)


async def retire(db: Database, kid: str) -> bool:
    """Stop a superseded key verifying (the newest key cannot be retired)."""
    async with db.connection() as conn:
        return await sql.retire(conn, kid)


async def _add(conn: Any, master_key: bytes, algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown signing algorithm {algorithm!r}")
    kid = "j" + uuid.uuid4().hex[:12]
    sealed = crypto.seal_key(master_key, kid, new_material(algorithm))
    await sql.add(conn, kid, JWT, sealed, algorithm)
    return kid
