"""The wire vocabulary: msgspec Structs for request and response bodies.

Constraints live in the types (`Meta`), so the decoder enforces them and the
OpenAPI document states them. What msgspec cannot express (control
characters) is checked by `fastpath.codec`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

INT64_MAX = 2**63 - 1

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Currency = Annotated[
    str,
    Meta(pattern=r"^[A-Z][A-Z0-9_]{2,11}$", description="ISO 4217 code or a custom unit"),
]
OverdraftLimit = Annotated[int, Meta(ge=0, le=INT64_MAX)]
MetadataKey = Annotated[str, Meta(min_length=1, max_length=40)]
MetadataValue = Annotated[str, Meta(max_length=500)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=50)]
# PATCH merges metadata: a null value deletes that key.
MetadataPatch = Annotated[dict[MetadataKey, MetadataValue | None], Meta(max_length=50)]
AccountStatus = Literal["active", "frozen", "closed"]
Email = Annotated[str, Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]


class Strict(Struct, forbid_unknown_fields=True):
    """Request bodies: unknown fields are an error, not silently dropped."""


class Address(Strict, omit_defaults=True):
    line1: Annotated[str, Meta(min_length=1, max_length=200)]
    city: Annotated[str, Meta(min_length=1, max_length=100)]
    country: Annotated[str, Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
    line2: Annotated[str, Meta(max_length=200)] | None = None
    region: Annotated[str, Meta(max_length=100)] | None = None
    postal_code: Annotated[str, Meta(max_length=20)] | None = None


class Holder(Strict, omit_defaults=True):
    """Personal data: sealed at rest, shown only to tokens with pii:read."""

    name: Name
    email: Email | None = None
    phone: Annotated[str, Meta(pattern=r"^\+?[0-9 ()./-]{3,32}$")] | None = None
    address: Address | None = None
    tax_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None


class AccountCreate(Strict):
    name: Name
    currency: Currency
    overdraft_limit: OverdraftLimit | None = 0
    holder: Holder | None = None
    metadata: Metadata = {}


class AccountPatch(Strict, omit_defaults=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    status: AccountStatus | msgspec.UnsetType = msgspec.UNSET
    overdraft_limit: OverdraftLimit | msgspec.UnsetType | None = msgspec.UNSET
    metadata: MetadataPatch | msgspec.UnsetType = msgspec.UNSET


class TokenRequest(Strict):
    client_id: Annotated[str, Meta(min_length=1, max_length=100)]
    client_secret: Annotated[str, Meta(min_length=1, max_length=200)]
    grant_type: Literal["client_credentials"] = "client_credentials"
    scope: Annotated[str, Meta(max_length=500)] | None = None


# Response shapes (documentation and tests; handlers build dicts via the codec).


class Balance(Struct):
    posted: int
    pending: int
    available: int


class Account(Struct):
    id: str
    name: str
    currency: str
    status: AccountStatus
    overdraft_limit: int | None
    balance: Balance
    holder: Holder | None
    metadata: dict[str, str]
    version: int
    created_at: datetime
    updated_at: datetime


class AccountEnvelope(Struct):
    data: Account


class PageMeta(Struct):
    limit: int
    has_more: bool
    next_cursor: str | None


class AccountPage(Struct):
    data: list[Account]
    meta: PageMeta


class TokenResponse(Struct):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str


class Jwk(Struct):
    """An Ed25519 public key that verifies Tally's EdDSA tokens (RFC 8037)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class JwkSet(Struct):
    keys: list[Jwk]


class FieldError(Struct):
    field: str
    message: str


class ErrorBody(Struct):
    code: str
    message: str
    details: dict[str, Any]


class ErrorEnvelope(Struct):
    error: ErrorBody


class Health(Struct):
    status: str
    checks: dict[str, str] = {}


# Transfers.

Amount = Annotated[int, Meta(ge=1, le=INT64_MAX)]
Description = Annotated[str, Meta(max_length=500)]
# Holds can wait at most 30 days before they expire.
TimeoutSeconds = Annotated[int, Meta(ge=1, le=30 * 24 * 3600)]
TransferStatus = Literal["posted", "pending", "voided", "expired"]


class TransferCreate(Strict):
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: Amount
    currency: Currency
    pending: bool = False
    timeout_seconds: TimeoutSeconds | None = None
    description: Description | None = None
    metadata: Metadata = {}


class TransferBatch(Strict):
    transfers: Annotated[list[TransferCreate], Meta(min_length=1, max_length=1000)]
    atomic: bool = True


class PostPending(Strict):
    amount: Amount | None = None


class VoidPending(Strict):
    pass


class Transfer(Struct):
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    status: TransferStatus
    posted_amount: int | None
    expires_at: datetime | None
    description: str | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


class TransferEnvelope(Struct):
    data: Transfer


class TransferList(Struct):
    data: list[Transfer]


class TransferPage(Struct):
    data: list[Transfer]
    meta: PageMeta


class BatchItem(Struct, omit_defaults=True):
    status: int
    data: Transfer | None = None
    error: ErrorBody | None = None


class BatchResults(Struct):
    data: list[BatchItem]


class Entry(Struct):
    id: str
    transfer_id: str
    kind: Literal["posted", "pending", "post", "void", "expire"]
    amount: int
    pending_amount: int
    balance: Balance
    created_at: datetime


class EntryPage(Struct):
    data: list[Entry]
    meta: PageMeta


class BalanceAt(Struct):
    account_id: str
    at: datetime
    balance: Balance


class BalanceEnvelope(Struct):
    data: BalanceAt
