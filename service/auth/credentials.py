"""Client secrets: generated once, shown once, stored only as a hash.

A secret is 256 random bits, so a single SHA-256 is enough to make a stolen
hash useless (there is nothing to brute-force), and it keeps token issuance
fast; slow password hashes exist for low-entropy human passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "tsk_"


def generate_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def verify_secret(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
