"""Accounts: open, read (with ETag), list, and PATCH (with If-Match)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from fastpath import codec
from service.api import idempotency, params
from service.api.decoding import decode_body
from service.api.routing import (
    Endpoint,
    QueryParam,
    json_response,
    page_response,
)
from service.auth import scopes
from service.auth.tokens import Principal
from service.ledger import accounts as ledger
from service.ledger.idempotency import Claimed
from service.schemas import AccountCreate, AccountEnvelope, AccountPage, AccountPatch

_VERSION = codec.ACCOUNT_COLUMNS.index("version")
_STATUSES = ("active", "frozen", "closed")


async def _visible(request: Request, principal: Principal, row: tuple) -> dict:
    """The account as this principal may see it: the holder only with pii:read."""
    if scopes.PII_READ not in principal.scopes:
        return codec.account_to_dict(row, False)
    row = await ledger.reveal_holder(request.app.state.vault, principal.tenant_id, row)
    return codec.account_to_dict(row, True)


async def _account(
    request: Request,
    row: tuple,
    principal: Principal,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    if scopes.PII_READ in principal.scopes:
        data = await _visible(request, principal, row)
    else:  # what _visible gives, without a coroutine: the read path's common case
        data = codec.account_to_dict(row, False)
    etag = {"ETag": f'"{row[_VERSION]}"'}
    return json_response({"data": data}, status, {**etag, **headers} if headers else etag)


async def open_account(request: Request, principal: Principal) -> Response:
    spec = await decode_body(request, AccountCreate)
    claim = idempotency.claim_of(request, principal, spec)
    state = request.app.state
    opened = await ledger.open_account(state.db, state.vault, principal.tenant_id, spec, claim)
    if isinstance(opened, Claimed):
        assert claim is not None
        # A repeat: the account the key opened, as it is now (the stored
        # answer names it; a copy of the first answer would keep the
        # holder's personal data outside the vault).
        status, stored = idempotency.stored_answer(opened.existing, claim)
        account_id = ledger.opened_account_id(stored)
        row = await ledger.get_account(state.accounts, principal.tenant_id, account_id)
        return await _account(request, row, principal, status, idempotency.REPLAYED)
    return await _account(request, opened, principal, 201)


async def get_account(request: Request, principal: Principal) -> Response:
    account_id = params.path_id(request)
    row = await ledger.get_account(request.app.state.accounts, principal.tenant_id, account_id)
    return await _account(request, row, principal)


async def list_accounts(request: Request, principal: Principal) -> Response:
    limit = params.limit(request)
    rows, has_more = await ledger.list_accounts(
        request.app.state.db,
        principal.tenant_id,
        limit=limit,
        before=params.cursor(request),
        currency=params.currency(request),
        status=params.choice(request, "status", _STATUSES),
    )
    data = [await _visible(request, principal, r) for r in rows]
    return page_response(data, limit, rows[-1][0] if has_more else None)


async def patch_account(request: Request, principal: Principal) -> Response:
    account_id = params.path_id(request)
    patch = await decode_body(request, AccountPatch)
    row = await ledger.update_account(
        request.app.state.db, principal.tenant_id, account_id, patch, _if_match(request)
    )
    return await _account(request, row, principal)


def _if_match(request: Request) -> frozenset[int] | None:
    """The versions If-Match accepts; None without the header or with `*`.

    RFC 9110 13.1.1: the field is a list of entity tags (several header lines
    make one list), and any member that names the current version matches. A
    tag Tally never sends (`"01"`) and anything that is not a list of quoted
    tags (`1`, `"1`) match no version: 412, nothing changed. A weak tag
    (`W/"1"`) names its version too, though the RFC compares strongly here:
    proxies weaken ETags when they compress a response (nginx's gzip does),
    and the tag is the version number itself, so no stale write can pass.
    """
    values = request.headers.getlist("if-match")
    if not values:
        return None
    field = ",".join(values)
    if field.strip(" \t") == "*":
        return None
    versions: set[int] = set()
    position, end = 0, len(field)
    while position < end:
        match = _ETAG_ITEM.match(field, position)
        if match is None:
            return frozenset()  # not a list of entity tags: nothing matches
        tag = match.group(1)
        if tag is not None and _VERSION_TAG.fullmatch(tag):
            versions.add(int(tag))
        position = match.end()
    return frozenset(versions)


# One list member: optional whitespace, an entity-tag (RFC 9110 8.8.3: opaque
# characters in quotes, `W/` for weak) or nothing (RFC 9110 5.6.1: empty members
# are allowed), optional whitespace, then a comma or the end.
_ETAG_ITEM = re.compile(r'[ \t]*(?:(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(?:,|\Z)')
# The tags Tally sends: a version in decimal, as the ETag header carries it.
_VERSION_TAG = re.compile(r"0|[1-9][0-9]{0,8}")


_LIST_QUERY = (
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
    QueryParam("cursor", params.CURSOR_SCHEMA, "next_cursor from the previous page"),
    QueryParam("currency", {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{2,11}$"}),
    QueryParam("status", {"type": "string", "enum": list(_STATUSES)}),
)

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/accounts",
        open_account,
        "Open an account",
        scope=scopes.LEDGER_WRITE,
        idempotent=True,
        body=AccountCreate,
        response=AccountEnvelope,
        status=201,
        errors=(400, 401, 403, 408, 413, 415, 422),
    ),
    Endpoint(
        "GET",
        "/api/accounts",
        list_accounts,
        "List accounts, newest first",
        scope=scopes.LEDGER_READ,
        response=AccountPage,
        query=_LIST_QUERY,
        errors=(400, 401, 403),
    ),
    Endpoint(
        "GET",
        "/api/accounts/{id}",
        get_account,
        "One account with balances (ETag)",
        scope=scopes.LEDGER_READ,
        response=AccountEnvelope,
        errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "PATCH",
        "/api/accounts/{id}",
        patch_account,
        "Rename, metadata, status, overdraft (If-Match)",
        scope=scopes.LEDGER_WRITE,
        body=AccountPatch,
        response=AccountEnvelope,
        errors=(400, 401, 403, 404, 408, 409, 412, 413, 415, 422),
    ),
]
