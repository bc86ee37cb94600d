"""Business-rule failures, named by the stable codes clients see."""

from __future__ import annotations


class LedgerError(Exception):
    """A request that breaks a ledger rule; changes nothing.

    `code` is the stable error code; `field` names the input at fault, if any.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class NotFound(LedgerError):
    def __init__(self, what: str) -> None:
        super().__init__("NOT_FOUND", f"No such {what}.")


class VersionMismatch(LedgerError):
    def __init__(self, current: int) -> None:
        super().__init__(
            "VERSION_MISMATCH",
            f"The account has changed (version {current}); re-read it and retry.",
        )
        self.current = current
