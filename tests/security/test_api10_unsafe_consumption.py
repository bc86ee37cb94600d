"""API10:2023 Unsafe consumption of APIs: the only third-party answers Tally
consumes are webhook receivers' responses. The dispatcher takes their status
line and nothing else: it never reads a body, never follows a redirect, bounds
every attempt by the timeout, and keeps only a short error text.
"""

# The webhook tests' fixtures are imported by name, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.service.webhooks.conftest import (  # noqa: F401  (fixtures)
    api,
    eventually,
    hook_app,
    hook_settings,
    owner,
    run_dispatcher,
)
from tests.service.webhooks.test_dispatcher import deliveries, open_accounts, register

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_receiver(answer: Answer) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that reads the request, then lets `answer` write anything."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await answer(writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()


async def endless_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    while True:  # until the dispatcher hangs up
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()


async def huge_error(writer: asyncio.StreamWriter) -> None:
    body = b"<html>" + b"e" * 2_000_000
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nX-Junk: " + b"j" * 30_000 + b"\r\n")
    writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()


async def garbage(writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\xffNOT HTTP AT ALL " * 5000 + b"\r\n\r\n")
    await writer.drain()


async def redirect_inside(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/latest/\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    await writer.drain()


async def attempts_of(api, owner, hook_id: str) -> list[dict]:
    rows = await deliveries(api, owner, hook_id)
    return [a for row in rows for a in row["attempts"]]


async def test_an_endless_response_body_is_not_read(api, owner, run_dispatcher):
    async with raw_receiver(endless_body) as url:
        created = await register(api, owner, url)
        await open_accounts(api, owner, 1)
        # Reading the body would run into the attempt timeout and count as a failure.
        async with run_dispatcher(owner, webhook_timeout_seconds=5.0, webhook_lease_seconds=10.0):

            async def delivered() -> bool:
                rows = await deliveries(api, owner, created["id"])
                return bool(rows) and rows[0]["status"] == "delivered"

            await eventually(delivered, what="delivered without reading the body")
    (attempt,) = await attempts_of(api, owner, created["id"])
    assert attempt["status_code"] == 200 and attempt["error"] is None


@pytest.mark.parametrize(
    ("answer", "status"),
    [(huge_error, 500), (garbage, None), (redirect_inside, 307)],
    ids=["huge-error", "garbage", "redirect"],
)
async def test_hostile_answers_are_failed_attempts_with_a_short_error(
    api, owner, run_dispatcher, answer, status
):
    async with raw_receiver(answer) as url:
        created = await register(api, owner, url)
        await open_accounts(api, owner, 1)
        async with run_dispatcher(owner):

            async def failed_once() -> bool:
                return len(await attempts_of(api, owner, created["id"])) >= 1

            await eventually(failed_once, what="a recorded attempt")
    first = (await attempts_of(api, owner, created["id"]))[0]
    assert first["status_code"] == status
    assert first["error"] and len(first["error"]) <= 300
    assert "eeee" not in first["error"] and "jjjj" not in first["error"]
