"""The scopes a client may hold, and what each one allows."""

from __future__ import annotations

LEDGER_READ = "ledger:read"
LEDGER_WRITE = "ledger:write"
EVENTS_READ = "events:read"
WEBHOOKS_MANAGE = "webhooks:manage"
PII_READ = "pii:read"
ADMIN = "admin"

ALL = (LEDGER_READ, LEDGER_WRITE, EVENTS_READ, WEBHOOKS_MANAGE, PII_READ, ADMIN)
DEFAULT = (LEDGER_READ, LEDGER_WRITE)


def parse(text: str) -> tuple[str, ...]:
    """Scopes from a space- or comma-separated string; raises ValueError on unknown ones."""
    names = [s for s in text.replace(",", " ").split() if s]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
    # Keep the canonical order and drop repeats.
    return tuple(s for s in ALL if s in names)
