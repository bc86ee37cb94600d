"""Transfers: create (one or a batch), post or void a hold, read, list.

Writes honour `Idempotency-Key`: the key is claimed, and the reply stored, in
the same transaction as the work, so a retry replays it, a repeat while it
runs is refused, and no key ever produces two transfers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fastpath import kernel
from service.api import idempotency, params
from service.api.decoding import decode_json, decode_optional_body, require_json
from service.api.routing import (
    Endpoint,
    JsonBody,
    QueryParam,
    json_response,
    page_response,
)
from service.auth import scopes
from service.auth.tokens import Principal
from service.errors import field_error, not_found
from service.ledger import transfers as ledger
from service.ledger.idempotency import Claimed
from service.ledger.transfers import (
    NewTransfer,
    NotCommitted,
    Outcome,
    Settle,
)
from service.schemas import (
    BatchResults,
    PostPending,
    TransferBatch,
    TransferCreate,
    TransferEnvelope,
    TransferList,
    TransferPage,
    VoidPending,
)

_encode = msgspec.json.Encoder().encode
_STATUSES = ("posted", "pending", "voided", "expired")

MESSAGES = {
    "INSUFFICIENT_FUNDS": "The debit account's available balance would go below its floor.",
    "CURRENCY_MISMATCH": "Both accounts must hold the transfer's currency.",
    "SAME_ACCOUNT": "The debit and credit accounts must differ.",
    "ACCOUNT_NOT_FOUND": "An account of the transfer does not exist.",
    "ACCOUNT_NOT_ACTIVE": "Frozen accounts accept credits only; closed accounts accept nothing.",
    "BALANCE_OVERFLOW": "The transfer would take a balance past the 64-bit range.",
    "TRANSFER_NOT_FOUND": "No such transfer.",
    "TRANSFER_NOT_PENDING": "The transfer is not pending (posted, voided or expired).",
    "AMOUNT_EXCEEDS_PENDING": "The amount to post exceeds the pending amount.",
    "BATCH_ABORTED": "Not applied: another transfer of this atomic batch failed.",
}


def _error(code: str, **details: Any) -> dict[str, Any]:
    if code == "TRANSFER_NOT_FOUND":
        code = "NOT_FOUND"
    message = MESSAGES.get(code, MESSAGES["TRANSFER_NOT_FOUND"])
    return {"error": {"code": code, "message": message, "details": details}}


def _status(code: str) -> int:
    return 404 if code == "TRANSFER_NOT_FOUND" else 422


def _render_one(created: int) -> Callable[[list[Outcome]], tuple[int, bytes]]:
    def render(outcomes: list[Outcome]) -> tuple[int, bytes]:
        code, data = outcomes[0]
        if code is not None:
            return _status(code), _encode(_error(code))
        return created, _encode({"data": data})

    return render


def _render_atomic(outcomes: list[Outcome]) -> tuple[int, bytes]:
    for index, (code, _) in enumerate(outcomes):
        if code is not None and code != "BATCH_ABORTED":
            return 422, _encode(_error(code, index=index))
    return 201, _encode({"data": [data for _, data in outcomes]})


def _render_each(outcomes: list[Outcome]) -> tuple[int, bytes]:
    items = [
        {"status": 201, "data": data} if code is None else {"status": _status(code), **_error(code)}
        for code, data in outcomes
    ]
    return 200, _encode({"data": items})


def _new_transfer(body: TransferCreate, path: str = "") -> NewTransfer:
    prefix = f"{path}." if path else ""
    # In a batch the kernel reports SAME_ACCOUNT per item (with its index).
    if not path and body.debit_account_id == body.credit_account_id:
        raise field_error(
            422, "SAME_ACCOUNT",
            [{"field": f"{prefix}credit_account_id", "message": "must differ from the debit"}],
            MESSAGES["SAME_ACCOUNT"],
        )  # fmt: skip
    if body.timeout_seconds is not None and not body.pending:
        raise field_error(
            422, "VALIDATION_ERROR",
            [{"field": f"{prefix}timeout_seconds", "message": "applies only with pending: true"}],
            "The request breaks a validation rule.",
        )  # fmt: skip
    return NewTransfer(
        debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id,
        amount=body.amount,
        currency=body.currency,
        pending=body.pending,
        timeout_seconds=body.timeout_seconds,
        description=body.description,
        metadata=body.metadata,
    )


async def _submit(
    request: Request,
    principal: Principal,
    body: msgspec.Struct,
    ops: list[NewTransfer | Settle],
    render: Callable[[list[Outcome]], tuple[int, bytes]],
    atomic: bool = False,
) -> Response:
    work = ledger.Request(principal.tenant_id, ops, atomic=atomic, render=render)
    work.claim = idempotency.claim_of(request, principal, body)
    try:
        result = await request.app.state.transfers.submit(work)
    except NotCommitted as failure:
        # Nothing was written, the key's claim included: a retry runs anew.
        raise failure.cause from None
    if isinstance(result, Claimed):
        assert work.claim is not None
        status, stored = idempotency.stored_answer(result.existing, work.claim)
        return JsonBody(stored.encode(), status, idempotency.REPLAYED)
    status, payload = render(result)
    return JsonBody(payload, status)


async def create_transfer(request: Request, principal: Principal) -> Response:
    require_json(request)
    body = decode_json(await request.body(), TransferCreate)
    return await _submit(request, principal, body, [_new_transfer(body)], _render_one(201))


async def create_batch(request: Request, principal: Principal) -> Response:
    require_json(request)
    body = decode_json(await request.body(), TransferBatch)
    ops: list[NewTransfer | Settle] = [
        _new_transfer(item, f"transfers[{i}]") for i, item in enumerate(body.transfers)
    ]
    render = _render_atomic if body.atomic else _render_each
    return await _submit(request, principal, body, ops, render, atomic=body.atomic)


async def post_transfer(request: Request, principal: Principal) -> Response:
    transfer_id = params.path_id(request)
    body = await decode_optional_body(request, PostPending)
    op = Settle(transfer_id, kernel.POST, body.amount)
    return await _submit(request, principal, body, [op], _render_one(200))


async def void_transfer(request: Request, principal: Principal) -> Response:
    transfer_id = params.path_id(request)
    body = await decode_optional_body(request, VoidPending)
    op = Settle(transfer_id, kernel.VOID)
    return await _submit(request, principal, body, [op], _render_one(200))


async def get_transfer(request: Request, principal: Principal) -> Response:
    transfer_id = params.path_id(request)
    row = await ledger.get_transfer(
        request.app.state.transfer_reader, principal.tenant_id, transfer_id
    )
    if row is None:
        raise not_found("transfer")
    return json_response({"data": ledger.transfer_dict(row)})


async def list_transfers(request: Request, principal: Principal) -> Response:
    limit = params.limit(request)
    rows, has_more = await ledger.list_transfers(
        request.app.state.transfer_reader,
        principal.tenant_id,
        limit=limit,
        before=params.cursor(request),
        account_id=params.uuid_param(request, "account_id"),
        status=params.choice(request, "status", _STATUSES),
        created_from=params.timestamp(request, "from"),
        created_to=params.timestamp(request, "to"),
    )
    data = [ledger.transfer_dict(r) for r in rows]
    return page_response(data, limit, rows[-1][0] if has_more else None)


_WRITE_ERRORS = (400, 401, 403, 404, 408, 409, 413, 415, 422, 503)
_LIST_QUERY = (
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
    QueryParam("cursor", params.CURSOR_SCHEMA, "next_cursor from the previous page"),
    QueryParam("account_id", {"type": "string", "format": "uuid"}, "either side"),
    QueryParam("status", {"type": "string", "enum": list(_STATUSES)}),
    QueryParam("from", {"type": "string", "format": "date-time"}, "created at or after"),
    QueryParam("to", {"type": "string", "format": "date-time"}, "created before"),
)

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/transfers",
        create_transfer,
        "Move money (optionally as a pending hold)",
        scope=scopes.LEDGER_WRITE,
        idempotent=True,
        body=TransferCreate,
        response=TransferEnvelope,
        status=201,
        errors=_WRITE_ERRORS,
    ),
    Endpoint(
        "GET",
        "/api/transfers",
        list_transfers,
        "List transfers, newest first",
        scope=scopes.LEDGER_READ,
        response=TransferPage,
        query=_LIST_QUERY,
        errors=(400, 401, 403),
    ),
    Endpoint(
        "POST",
        "/api/transfers/batch",
        create_batch,
        "Up to 1000 transfers: atomic (201 or 422 with the failing index) or not (200)",
        scope=scopes.LEDGER_WRITE,
        idempotent=True,
        body=TransferBatch,
        response=TransferList,
        status=201,
        errors=_WRITE_ERRORS,
        also={200: BatchResults},
    ),
    Endpoint(
        "GET",
        "/api/transfers/{id}",
        get_transfer,
        "One transfer",
        scope=scopes.LEDGER_READ,
        response=TransferEnvelope,
        errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "POST",
        "/api/transfers/{id}/post",
        post_transfer,
        "Post a pending transfer (optionally part of it; the rest is released)",
        scope=scopes.LEDGER_WRITE,
        idempotent=True,
        body=PostPending,
        body_required=False,
        response=TransferEnvelope,
        errors=_WRITE_ERRORS,
    ),
    Endpoint(
        "POST",
        "/api/transfers/{id}/void",
        void_transfer,
        "Void a pending transfer",
        scope=scopes.LEDGER_WRITE,
        idempotent=True,
        body=VoidPending,
        body_required=False,
        response=TransferEnvelope,
        errors=_WRITE_ERRORS,
    ),
]
