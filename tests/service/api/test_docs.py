"""GET /docs: a self-contained page (no external URL) that renders /openapi.json."""

from __future__ import annotations

import re


async def test_docs_page_is_self_contained(client):
    r = await client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert 'fetch("/openapi.json")' in page
    # Nothing loaded from elsewhere: no absolute or protocol-relative URL anywhere.
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I), re.findall(
        r"(?:https?:)?//\S+", page
    )
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page, re.I)
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "'sha256-" in csp and "unsafe-inline" not in csp


async def test_the_document_it_renders_lists_operations_and_itself(client):
    doc = (await client.get("/openapi.json")).json()
    assert "get" in doc["paths"]["/docs"] and "get" in doc["paths"]["/metrics"]
    assert doc["paths"]["/api/usage"]["get"]["security"] == [{"bearer": ["admin"]}]
