"""Encryption at rest: AES-256-GCM under a key ring.

Data keys live in the `keys` table, each sealed with the master key
(TALLY_ENCRYPTION_KEY), so the database alone reveals nothing. Every
ciphertext names the key that made it: any key of the ring decrypts, the
newest active one encrypts, and `tally keys rotate` adds a key and re-seals
old ciphertexts. Associated data binds a ciphertext to its row, so one row's
ciphertext cannot be pasted into another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_NONCE = 12


class UnknownKey(Exception):
    """A ciphertext names a key this ring does not hold (yet)."""


class DecryptionFailed(Exception):
    """Wrong key, wrong row, or tampered ciphertext."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal_key(master: bytes, kid: str, key: bytes) -> bytes:
    """Encrypt a data key with the master key (bound to its id)."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(master).encrypt(nonce, key, b"tally-key:" + kid.encode())


def open_key(masters: bytes | Sequence[bytes], kid: str, sealed: bytes) -> bytes:
    """Decrypt a data key with whichever of the master keys sealed it.

    Several master keys are tried while the master key itself is being
    rotated (the current one first, then TALLY_PREVIOUS_ENCRYPTION_KEYS).
    """
    for master in [masters] if isinstance(masters, bytes) else masters:
        try:
            return AESGCM(master).decrypt(
                sealed[:_NONCE], sealed[_NONCE:], b"tally-key:" + kid.encode()
            )
        except InvalidTag:
            continue
    raise DecryptionFailed(f"key {kid} does not open with the configured master key")


@dataclass(frozen=True)
class KeyRing:
    """Data keys by id; `active` encrypts, all of them decrypt."""

    keys: dict[str, AESGCM]
    active: str

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """version | key-id length | key id | nonce | ciphertext+tag."""
        nonce = os.urandom(_NONCE)
        body = self.keys[self.active].encrypt(nonce, plaintext, aad)
        return header(self.active) + nonce + body

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        kid = key_id(blob)
        cipher = self.keys.get(kid)
        if cipher is None:
            raise UnknownKey(kid)
        start = 2 + len(kid.encode())
        try:
            return cipher.decrypt(blob[start : start + _NONCE], blob[start + _NONCE :], aad)
        except InvalidTag:
            raise DecryptionFailed("ciphertext does not open") from None


def header(kid: str) -> bytes:
    """How every ciphertext sealed under `kid` starts: version | key-id length | key id."""
    raw = kid.encode()
    return _VERSION + bytes([len(raw)]) + raw


def key_id(blob: bytes) -> str:
    """The id of the key that sealed `blob`."""
    if len(blob) < 2 or blob[:1] != _VERSION:
        raise DecryptionFailed("not a Tally ciphertext")
    return blob[2 : 2 + blob[1]].decode()
