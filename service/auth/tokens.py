"""Short-lived JWT access tokens (pyjwt, HS256) carrying tenant and scopes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from service.config import Settings
from service.db.ids import new_id

ALGORITHM = "HS256"
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


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_secret
        self._kid = settings.jwt_kid
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
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})

    def verify(self, token: str) -> Principal:
        """Check algorithm, key id, signature, expiry, issuer, audience and claims."""
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached[1]:
                return cached[0]
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
            if header.get("alg") != ALGORITHM or header.get("kid") != self._kid:
                raise InvalidToken("unknown signing key or algorithm")
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
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
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidToken(str(exc)) from None
        return Principal(sub, tenant_id, frozenset(scope.split())), expires
