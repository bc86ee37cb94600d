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
            if not isinstance(scope, str) or not isinstance(sub, str):
                raise InvalidToken("malformed claims")
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidToken(str(exc)) from None
        return Principal(sub, tenant_id, frozenset(scope.split()))
