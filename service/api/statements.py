"""An account's statement (entries with running balance) and balance at an instant."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from service.api import params
from service.api.routing import (
    Endpoint,
    QueryParam,
    json_response,
    page_response,
)
from service.auth import scopes
from service.auth.tokens import Principal
from service.ledger import statements as ledger
from service.schemas import BalanceEnvelope, EntryPage


def _balance(posted: int, pending_debits: int, pending_credits: int) -> dict[str, int]:
    return {
        "posted": posted,
        "pending": pending_credits - pending_debits,
        "available": posted - pending_debits,
    }


async def list_entries(request: Request, principal: Principal) -> Response:
    account_id = params.path_id(request)
    limit = params.limit(request)
    rows, has_more = await ledger.entries(
        request.app.state.entry_reader,
        principal.tenant_id,
        account_id,
        limit=limit,
        before=params.int_cursor(request),
        created_from=params.timestamp(request, "from"),
        created_to=params.timestamp(request, "to"),
    )
    data = [
        {
            "id": str(entry_id),
            "transfer_id": str(transfer_id),
            "kind": kind,
            "amount": amount,
            "pending_amount": pending_amount,
            "balance": _balance(posted, pending_debits, pending_credits),
            "created_at": created_at,
        }
        for (entry_id, transfer_id, kind, amount, pending_amount, posted, pending_debits,
             pending_credits, created_at) in rows
    ]  # fmt: skip
    # Entry ids are integers; the cursor carries one as a UUID's 128 bits.
    return page_response(data, limit, uuid.UUID(int=rows[-1][0]) if has_more else None)


async def get_balance(request: Request, principal: Principal) -> Response:
    account_id = params.path_id(request)
    at = params.timestamp(request, "at")
    posted, pending_debits, pending_credits, instant = await ledger.balance_at(
        request.app.state.db, request.app.state.accounts, principal.tenant_id, account_id, at
    )
    return json_response(
        {
            "data": {
                "account_id": str(account_id),
                "at": instant,
                "balance": _balance(posted, pending_debits, pending_credits),
            }
        }
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/accounts/{id}/entries",
        list_entries,
        "Statement: the account's entries, newest first, each with the balance after it",
        scope=scopes.LEDGER_READ,
        response=EntryPage,
        errors=(400, 401, 403, 404),
        query=(
            QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            QueryParam("cursor", params.ENTRY_CURSOR_SCHEMA),
            QueryParam("from", {"type": "string", "format": "date-time"}),
            QueryParam("to", {"type": "string", "format": "date-time"}),
        ),
    ),
    Endpoint(
        "GET",
        "/api/accounts/{id}/balance",
        get_balance,
        "Balances now, or at an instant (`at`)",
        scope=scopes.LEDGER_READ,
        response=BalanceEnvelope,
        errors=(400, 401, 403, 404),
        query=(QueryParam("at", {"type": "string", "format": "date-time"}),),
    ),
]
