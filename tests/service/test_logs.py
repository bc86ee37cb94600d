"""JSON log lines carry the request id; outages are logged once, not per request."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from service.app import create_app
from service.logs import REQUEST_ID, JsonFormatter, dict_config
from tests.conftest import serving


@pytest.fixture
def json_lines():
    """Everything logged under `tally` while the test runs, as parsed JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tally")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_one_json_object_per_line_with_extras_and_exceptions(json_lines):
    log = logging.getLogger("tally.test")
    token = REQUEST_ID.set("req-123")
    try:
        log.warning("hello %s", "world", extra={"tenant": "t1"})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("failed")
    finally:
        REQUEST_ID.reset(token)
    log.info("outside a request")
    first, second, third = json_lines()
    assert first["message"] == "hello world" and first["level"] == "warning"
    assert first["request_id"] == "req-123" and first["tenant"] == "t1"
    assert first["logger"] == "tally.test" and first["time"].endswith("Z")
    assert second["request_id"] == "req-123" and "ValueError: boom" in second["exception"]
    assert "request_id" not in third


async def test_a_request_that_fails_logs_its_request_id(settings, json_lines):
    application = create_app(settings)

    async def explode(request):
        raise RuntimeError("a bug")

    application.add_route("/explode", explode)
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.get("/explode", headers={"X-Request-Id": "trace-me-42"})
    assert r.status_code == 500
    assert r.json()["error"]["details"]["request_id"] == "trace-me-42"
    errors = [line for line in json_lines() if line["level"] == "error"]
    assert errors and all(line["request_id"] == "trace-me-42" for line in errors)
    assert "RuntimeError: a bug" in errors[0]["exception"]


async def test_database_outage_is_logged_once_as_json(settings, tenant, json_lines):
    broken = settings.with_overrides(
        database_url="postgresql://postgres@127.0.0.1:1/tally", db_timeout_seconds=0.5
    )
    async with serving(broken) as (_, http):
        headers = {"Authorization": f"Bearer {tenant.token()}"}
        for _ in range(4):
            r = await http.get(f"/api/accounts/{tenant.client_id}", headers=headers)
            assert r.status_code == 503
    outages = [line for line in json_lines() if line["message"].startswith("database unavailable")]
    assert len(outages) == 1 and outages[0]["level"] == "error"


def test_dict_config_covers_granian_loggers():
    config = dict_config("json")
    assert config["formatters"]["main"] == {"()": "service.logs.JsonFormatter"}
    assert set(config["loggers"]) >= {"_granian", "granian.access"}
    assert dict_config("text")["formatters"]["main"]["format"].startswith("%(levelname)s")
