"""Personal data at rest: account holders sealed under the key ring.

Workers load the ring lazily, reload it periodically and whenever they meet a
ciphertext under a key they do not know yet, so a rotated key reaches every
worker without a restart. A background pass re-seals holders still in
plaintext (rows from before encryption) or under an older key.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec

from service import crypto
from service.db import keys as sql
from service.db.pool import Database

log = logging.getLogger("tally.vault")

DATA = "data"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


# The associated data of a webhook signing secret: this prefix, tenant id, endpoint id.
WEBHOOK_SECRET_AAD = b"webhook-secret:"
# Sealed columns other than account holders, re-sealed after a rotation like
# them: (table, column, AAD prefix); rows are keyed (tenant_id, id).
SEALED_COLUMNS = (
    ("webhook_endpoints", "secret", WEBHOOK_SECRET_AAD),
    # After a signing-secret rotation, the replaced secret, in its grace period
    # (same binding: it is the endpoint's too).
    ("webhook_endpoints", "previous_secret", WEBHOOK_SECRET_AAD),
)


def _aad(tenant_id: uuid.UUID, account_id: uuid.UUID) -> bytes:
    return b"holder:" + tenant_id.bytes + account_id.bytes


class Vault:
    def __init__(self, db: Database, master_key: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self._db = db
        self._master = master_key
        self._masters = (master_key, *previous)
        self._ring: crypto.KeyRing | None = None

    async def ring(self) -> crypto.KeyRing:
        if self._ring is None:
            await self.load()
        assert self._ring is not None
        return self._ring

    async def load(self) -> None:
        """(Re)load the ring; the first worker ever to run creates the first key."""
        async with self._db.connection() as conn, conn.transaction():
            rows = await sql.load(conn, DATA)
            if not rows:
                await sql.lock(conn)
                rows = await sql.load(conn, DATA)
                if not rows:
                    rows = [await _add_key(conn, self._master)]
        keys = {kid: crypto.AESGCM(crypto.open_key(self._masters, kid, sealed))
                for kid, sealed in rows}  # fmt: skip
        self._ring = crypto.KeyRing(keys, rows[-1][0])

    async def seal_holder(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, holder: dict[str, Any]
    ) -> bytes:
        ring = await self.ring()
        return ring.encrypt(_encode(holder), _aad(tenant_id, account_id))

    async def open_holder(
        self, tenant_id: uuid.UUID, account_id: uuid.UUID, blob: bytes
    ) -> dict[str, Any]:
        plain, _ = await self._decrypt(await self.ring(), blob, _aad(tenant_id, account_id))
        return _decode(plain)

    async def _decrypt(
        self, ring: crypto.KeyRing, blob: bytes, aad: bytes
    ) -> tuple[bytes, crypto.KeyRing]:
        """Decrypt with `ring`, reloading it first if `blob` names a key it lacks
        (rotated since it was loaded). Returns the ring to go on with: a caller
        that re-seals must use the reloaded one, or it would seal under the
        old active key what another worker has just moved to the new one."""
        try:
            return ring.decrypt(blob, aad), ring
        except crypto.UnknownKey:
            await self.load()
            ring = await self.ring()
            return ring.decrypt(blob, aad), ring

    async def reseal(self, batch: int = 500) -> int:
        """Seal plaintext holders, and re-seal holders and webhook secrets under
        an older key with the active one; returns how many rows changed."""
        ring = await self.ring()
        async with self._db.connection() as conn, conn.transaction():
            rows = await sql.holders_to_seal(conn, ring.active, batch)
            for tenant_id, account_id, sealed, plain in rows:
                aad = _aad(tenant_id, account_id)
                if plain is None:
                    assert sealed is not None
                    raw, ring = await self._decrypt(ring, sealed, aad)
                    plain = _decode(raw)
                await sql.set_holder(conn, tenant_id, account_id, ring.encrypt(_encode(plain), aad))
            count = len(rows)
            for table, column, prefix in SEALED_COLUMNS:
                count += await self._reseal_column(conn, ring, table, column, prefix, batch)
        return count

    async def _reseal_column(
        self, conn: Any, ring: crypto.KeyRing, table: str, column: str, prefix: bytes, batch: int
    ) -> int:
        rows = await sql.sealed_to_reseal(conn, table, column, ring.active, batch)
        for tenant_id, row_id, sealed in rows:
            aad = prefix + tenant_id.bytes + row_id.bytes
            plain, ring = await self._decrypt(ring, sealed, aad)
            await sql.set_sealed_column(
                conn, table, column, tenant_id, row_id, ring.encrypt(plain, aad)
            )
        return len(rows)


async def _add_key(conn: Any, master: bytes) -> tuple[str, bytes]:
    kid = "d" + uuid.uuid4().hex[:12]
    sealed = crypto.seal_key(master, kid, crypto.new_key())
    await sql.add(conn, kid, DATA, sealed)
    return kid, sealed


async def rotate(db: Database, master_key: bytes) -> str:
    """Add a data key; it encrypts from now on, and the re-seal pass moves old rows to it."""
    async with db.connection() as conn, conn.transaction():
        await sql.lock(conn)
        kid, _ = await _add_key(conn, master_key)
    log.info("added data key %s", kid)
    return kid


async def rotate_master(db: Database, master_key: bytes, previous: tuple[bytes, ...]) -> int:
    """Re-seal every key of the ring (data and signing) under `master_key`.

    Each key is opened with whichever of `master_key` and `previous` sealed
    it, so the command can be run again after an interruption. Returns how
    many keys were re-sealed. Nothing is written unless every key opens.
    """
    masters = (master_key, *previous)
    async with db.connection() as conn, conn.transaction():
        await sql.lock(conn)
        rows = await sql.all_sealed(conn)
        opened = [(kid, crypto.open_key(masters, kid, sealed)) for kid, sealed in rows]
        for kid, key in opened:
            await sql.set_sealed(conn, kid, crypto.seal_key(master_key, kid, key))
    log.info("re-sealed %d keys under the new master key", len(opened))
    return len(opened)
