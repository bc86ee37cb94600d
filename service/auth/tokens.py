"""Short-lived JWT access tokens (pyjwt) carrying tenant and scopes.

Signed with the active key of the signing ring (`service.auth.signing`):
HS256 or EdDSA, named by `kid`; any live key of the ring verifies.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass

import jwt

from service.auth import signing
from service.config import Settings
from service.db.ids import new_id
from service.db.pool import Database

_REQUIRED = ["exp", "iat", "sub", "tid", "scope", "iss", "aud", "jti"]
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the API client, its tenant and the scopes its token grants."""

    client_id: str
    tenant_id: uuid.UUID
    scopes: frozenset[str]


class InvalidToken(Exception):
    pass


class UnknownSigningKey(InvalidToken):
    """The token names a key id this worker does not know (perhaps not yet)."""


class TokenService:
    def __init__(
        self,
        settings: Settings,
        db: Database | None = None,
        masters: tuple[bytes, ...] = (),
    ) -> None:
        self._static = signing.static_key(settings)
        self._ring = signing.SigningRing({self._static.kid: self._static}, self._static)
        self._db = db
        self._masters = masters
        self._algorithm = settings.jwt_algorithm
        self._miss_reload_at = 0.0
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.ttl = settings.token_ttl_seconds
        # Verified tokens, so a client's repeated requests skip the signature
        # check; the expiry is still checked on every use.
        self._verified: dict[str, tuple[Principal, int]] = {}

    def issue(self, client_id: uuid.UUID, tenant_id: uuid.UUID, scopes: tuple[str, ...]) -> str:
        now = int(time.time())
        claims = {
            "sub": str(client_id),
            "tid": str(tenant_id),
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + self.ttl,
            "jti": new_id().hex,
            "iss": self._issuer,
            "aud": self._audience,
        }
        key = self._ring.active
        return jwt.encode(claims, key.signing, algorithm=key.algorithm, headers={"kid": key.kid})

    def public_keys(self) -> list[dict[str, str]]:
        """The ring's live EdDSA public keys as JWKs (HS256 secrets are never shown)."""
        now = time.time()
        return [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": base64.urlsafe_b64encode(key.verifying.public_bytes_raw())
                .rstrip(b"=")
                .decode(),
                "kid": key.kid,
                "alg": signing.EDDSA,
                "use": "sig",
            }
            for key in self._ring.keys.values()
            if key.algorithm == signing.EDDSA and self._ring.verifier(key.kid, now) is not None
        ]

    @property
    def active_kid(self) -> str:
        return self._ring.active.kid

    async def reload(self, *, startup: bool = False) -> None:
        """Load the signing ring from the database.

        At start-up, a key of the configured algorithm is added if the newest
        key is of another one. Cached verifications are dropped whenever the
        ring changes, so a retired key stops working at once.
        """
        if self._db is None:
            return
        stored = await signing.load(
            self._db, self._masters, algorithm=self._algorithm if startup else None
        )
        ring = signing.build_ring(self._static, stored, self.ttl)
        if ring.fingerprint() != self._ring.fingerprint():
            self._verified.clear()
        self._ring = ring

    async def verify_async(self, token: str) -> Principal:
        """`verify`, reloading the ring (at most once a second) on an unknown key id."""
        try:
            return self.verify(token)
        except UnknownSigningKey:
            now = time.monotonic()
            if self._db is None or now - self._miss_reload_at < 1.0:
                raise
            self._miss_reload_at = now
            await self.reload()
            return self.verify(token)

    def cached(self, token: str) -> Principal | None:
        """The principal of a token `verify` accepted before and that has not
        expired since; None: ask `verify`."""
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        return None

    def verify(self, token: str) -> Principal:
        """Check algorithm, key id, signature, expiry, issuer, audience and claims."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        if token in self._verified:  # accepted before, expired since
            del self._verified[token]
            raise InvalidToken("expired")
        principal, expires = self._verify(token)
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.clear()  # crude but bounded; refills with live tokens
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, int]:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise InvalidToken("no key id")
            key = self._ring.verifier(kid, time.time())
            if key is None:
                raise UnknownSigningKey(kid)
            # The key decides the algorithm, never the token's header.
            if header.get("alg") != key.algorithm:
                raise InvalidToken("wrong algorithm for this key")
            claims = jwt.decode(
                token,
                key.verifying,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": _REQUIRED},
            )
            tenant_id = uuid.UUID(claims["tid"])
            scope = claims["scope"]
            sub = claims["sub"]
            expires = claims["exp"]
            if not isinstance(scope, str) or not isinstance(sub, str):
                raise InvalidToken("malformed claims")
            if not isinstance(expires, int):
                raise InvalidToken("malformed exp")
        except InvalidToken:
            raise
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidToken(str(exc)) from None
        return Principal(sub, tenant_id, frozenset(scope.split())), expires
