"""GET /docs: the OpenAPI document rendered for a person, from the package alone.

One self-contained HTML page (inline CSS and a small vanilla-JS renderer
shipped in `service/static/docs.html`) that fetches `/openapi.json` from
the same origin: no CDN, no external URL. Its Content-Security-Policy
allows exactly that page's own script and style (by hash) and same-origin
fetches.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from service.api.routing import Endpoint

_PAGE = resources.files("service.static").joinpath("docs.html").read_bytes()


def _hashes(tag: bytes) -> str:
    blocks = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", _PAGE, re.S)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in blocks
    )


_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_hashes(b'script')}; style-src {_hashes(b'style')};"
        " connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}


async def docs(request: Request) -> Response:
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=_HEADERS)


ENDPOINTS = [
    Endpoint("GET", "/docs", docs, "This API reference, for a person (HTML)", tag="operations")
]
