"""POST /api/auth/token: client credentials in, short-lived JWT out.

Accepts a JSON body or the OAuth 2 form (`grant_type=client_credentials`)
with the credentials in HTTP Basic or in the form itself.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import Response

from service.api.decoding import decode_json
from service.api.params import single_header
from service.api.routing import Endpoint, client_address, json_response, limit
from service.auth import clients
from service.auth import scopes as scope_names
from service.errors import ApiError, bad_request
from service.schemas import JwkSet, TokenRequest, TokenResponse

_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _invalid_client(basic: bool) -> ApiError:
    headers = {"WWW-Authenticate": 'Basic realm="tally"'} if basic else None
    return ApiError(
        401, "INVALID_CLIENT", "Unknown client, wrong secret, or revoked client.", headers=headers
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        # RFC 6749 5.2: client authentication with an unsupported scheme is
        # invalid_client (401), with the scheme the server does support.
        raise ApiError(
            401,
            "INVALID_CLIENT",
            "Only HTTP Basic client authentication is supported here.",
            headers={"WWW-Authenticate": 'Basic realm="tally"'},
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise bad_request("The Basic credentials are not valid base64.") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise bad_request("The Basic credentials must be client_id:client_secret.")
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id), unquote(secret)


def _form_request(body: bytes, basic: tuple[str, str] | None) -> TokenRequest:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The form body is malformed.") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise bad_request("A form parameter is repeated.")
    grant = form.get("grant_type")
    if grant != "client_credentials":
        raise ApiError(400, "UNSUPPORTED_GRANT_TYPE", "grant_type must be client_credentials.")
    if basic is not None:
        if "client_id" in form or "client_secret" in form:
            raise bad_request("Send the credentials once: in Basic or in the form, not both.")
        form["client_id"], form["client_secret"] = basic
    return decode_json(_json_of(form), TokenRequest)


def _json_of(form: dict[str, str]) -> bytes:
    import msgspec

    return msgspec.json.encode(form)


async def issue_token(request: Request) -> Response:
    basic = _basic_credentials(request)
    ctype = (single_header(request, "Content-Type") or "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if ctype == _FORM:
        req = _form_request(body, basic)
    elif ctype == "application/json":
        if basic is not None:
            raise bad_request("Send JSON credentials in the body, not in Basic.")
        req = decode_json(body, TokenRequest)
    else:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"Send {_FORM} or application/json.")
    # Per source address and per client id, before the secret is checked, so
    # secrets cannot be brute-forced from one place or spread across many.
    settings = request.app.state.settings
    rate, burst = settings.auth_rate_limit, settings.auth_rate_burst
    await limit(request, f"auth-ip:{client_address(request)}", rate, burst)
    await limit(request, f"auth-client:{req.client_id}", rate, burst)
    client = await clients.authenticate(request.app.state.db, req.client_id, req.client_secret)
    if client is None:
        raise _invalid_client(basic is not None)
    granted = client.scopes
    if req.scope is not None:
        try:
            wanted = scope_names.parse(req.scope)
        except ValueError as exc:
            raise ApiError(400, "INVALID_SCOPE", str(exc)) from None
        # RFC 6749 3.2: a parameter sent without a value is treated as omitted.
        if wanted:
            if not set(wanted) <= set(granted):
                raise ApiError(
                    400, "INVALID_SCOPE", "The client does not hold every scope asked for."
                )
            granted = wanted
    tokens = request.app.state.tokens
    token = tokens.issue(client.id, client.tenant_id, granted)
    return json_response(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": tokens.ttl,
            "scope": " ".join(granted),
        },
        headers=_NO_STORE,
    )


async def jwks(request: Request) -> Response:
    """The public keys of the signing ring, for services that verify Tally's tokens."""
    keys = request.app.state.tokens.public_keys()
    return json_response({"keys": keys}, headers={"Cache-Control": "public, max-age=60"})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/.well-known/jwks.json",
        jwks,
        "Public keys that verify EdDSA tokens (empty with HS256)",
        response=JwkSet,
        tag="auth",
    ),
    Endpoint(
        "POST",
        "/api/auth/token",
        issue_token,
        "Exchange client credentials for a JWT",
        body=TokenRequest,
        response=TokenResponse,
        errors=(400, 401, 408, 413, 415, 422),
        tag="auth",
    ),
]
