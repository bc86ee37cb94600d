"""Locust scenario: authenticated account reads and writes against a running Tally.

Run with `make load` (targets http://127.0.0.1:8000, as `make run` serves).
Credentials come from TALLY_LOAD_CLIENT_ID / TALLY_LOAD_CLIENT_SECRET, or
from the dev client that `make run` keeps in .tally/dev-client.json.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import HttpUser, between, events, task


def _credentials() -> dict[str, str]:
    client_id = os.environ.get("TALLY_LOAD_CLIENT_ID")
    secret = os.environ.get("TALLY_LOAD_CLIENT_SECRET")
    if client_id and secret:
        return {"client_id": client_id, "client_secret": secret}
    saved = json.loads(Path(".tally/dev-client.json").read_text())
    return {"client_id": saved["client_id"], "client_secret": saved["client_secret"]}


@events.init_command_line_parser.add_listener
def _args(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--accounts", type=int, default=20, help="accounts per user")


class LedgerClient(HttpUser):
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        r = self.client.post("/api/auth/token", json=_credentials(), name="token")
        r.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        self.accounts: list[str] = []
        for i in range(self.environment.parsed_options.accounts):
            self.open_account(f"load {i}")

    def open_account(self, name: str) -> None:
        r = self.client.post(
            "/api/accounts", json={"name": name, "currency": "USD"}, name="/api/accounts [POST]"
        )
        if r.status_code == 201:
            self.accounts.append(r.json()["data"]["id"])

    @task(20)
    def get_account(self) -> None:
        if self.accounts:
            self.client.get(
                f"/api/accounts/{random.choice(self.accounts)}", name="/api/accounts/{id}"
            )

    @task(2)
    def list_accounts(self) -> None:
        self.client.get("/api/accounts?limit=20", name="/api/accounts")

    @task(1)
    def create(self) -> None:
        self.open_account("load extra")
