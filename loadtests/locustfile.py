"""Locust scenarios: a ledger's mixed traffic against a running Tally.

`make load` (`python -m loadtests`) starts a Tally of its own, creates one API
client per simulated user and runs this file headless; `--host` aims it at a
running server instead. Credentials: the JSON list in the file named by
TALLY_LOAD_CLIENTS, else TALLY_LOAD_CLIENT_ID / TALLY_LOAD_CLIENT_SECRET, else
the dev client that `make run` keeps in .tally/dev-client.json.

Each user is an API client that obtains a token and refreshes it before it
expires (and on a 401), opens accounts with Idempotency-Keys (one without a
floor that funds the others), moves money with Idempotency-Keys (retrying a failed attempt with the
same key, and sometimes replaying a completed one to check it answers the
same), places holds and posts or voids them, and reads balances, statements
and transfer lists. Answers the ledger is meant to give - 422 for a transfer
the floor refuses, 429 when a bucket is empty (the user waits Retry-After and
retries) - count as successes and are tallied as "intended"; anything else
that is not 2xx is a failure, and `make load` fails when there is one.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task

INTENDED: Counter[str] = Counter()  # "<name> <status>" of intended 4xx answers
_RETRIES = 3


def _credentials() -> list[dict[str, str]]:
    listed = os.environ.get("TALLY_LOAD_CLIENTS")
    if listed:
        return list(json.loads(Path(listed).read_text()))
    client_id = os.environ.get("TALLY_LOAD_CLIENT_ID")
    secret = os.environ.get("TALLY_LOAD_CLIENT_SECRET")
    if client_id and secret:
        return [{"client_id": client_id, "client_secret": secret}]
    saved = json.loads(Path(".tally/dev-client.json").read_text())
    return [{"client_id": saved["client_id"], "client_secret": saved["client_secret"]}]


_CLIENTS = itertools.cycle(_credentials())


@events.init_command_line_parser.add_listener
def _args(parser: Any) -> None:
    parser.add_argument("--accounts", type=int, default=4, help="accounts each user opens")
    parser.add_argument("--user-rps", type=float, default=0.0,
                        help="tasks per second per user (0: pauses of 0-50 ms)")  # fmt: skip


@events.quitting.add_listener
def _verdict(environment: Any, **_: Any) -> None:
    total = environment.stats.total
    ratio = total.num_failures / total.num_requests if total.num_requests else 0.0
    print(f"\nrequests {total.num_requests}, failures {total.num_failures} "
          f"(failure ratio {ratio:.4%}), intended 4xx/429 {sum(INTENDED.values())}: "
          f"{dict(INTENDED)}")  # fmt: skip
    if total.num_failures:
        environment.process_exit_code = 1


class LedgerClient(FastHttpUser):
    """One API client of a tenant, doing what a payments back end does all day."""

    def wait_time(self) -> float:
        rps = self.environment.parsed_options.user_rps
        return constant_throughput(rps)(self) if rps > 0 else random.uniform(0.0, 0.05)

    def on_start(self) -> None:
        self.credentials = next(_CLIENTS)
        self.token_expires_at = 0.0
        self.refresh_token()
        self.funding: str | None = None
        self.accounts: list[str] = []
        self.holds: list[str] = []
        self.funding = self.open_account("funding", overdraft=None)
        for i in range(self.environment.parsed_options.accounts):
            self.open_account(f"wallet {i}", overdraft=0)

    # -- plumbing ---------------------------------------------------------------

    def _headers(self, key: str | None = None) -> dict[str, str]:
        if time.monotonic() > self.token_expires_at:
            self.refresh_token()
        headers = {"Authorization": f"Bearer {self.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def _call(self, method: str, path: str, name: str, *, body: Any = None,
              key: str | None = None, intended: tuple[int, ...] = ()) -> Any:  # fmt: skip
        """One logical request: retried (same Idempotency-Key) on 429, 401 and 5xx/network
        errors; `intended` statuses are successes. Returns the JSON body of a 2xx, else None."""
        for attempt in range(_RETRIES + 1):
            with self.client.request(method, path, name=name, json=body,
                                     headers=self._headers(key),
                                     catch_response=True) as r:  # fmt: skip
                status = r.status_code
                if 200 <= status < 300:
                    r.success()
                    return r.json()
                if status in intended:
                    INTENDED[f"{name} {status}"] += 1
                    r.success()
                    return None
                if status == 429 and attempt < _RETRIES:
                    INTENDED[f"{name} 429"] += 1
                    r.success()
                    time.sleep(min(2.0, float(r.headers.get("Retry-After") or 1)))
                    continue
                if status == 401 and attempt < _RETRIES:
                    # Expired or rotated token: refresh and retry (not a failure).
                    INTENDED[f"{name} 401 (refreshed)"] += 1
                    r.success()
                    self.token_expires_at = 0.0
                    continue
                if (status == 0 or status >= 500) and attempt < _RETRIES and key is not None:
                    r.failure(f"{status}: retried with the same Idempotency-Key")
                    continue
                r.failure(f"{status}: {(r.text or '')[:200]}")
                return None
        return None

    def refresh_token(self) -> None:
        """Client credentials for a token; retried while the auth bucket says 429."""
        for _ in range(10):
            with self.client.post("/api/auth/token", json=self.credentials, name="token",
                                  catch_response=True) as r:  # fmt: skip
                if r.status_code == 200:
                    r.success()
                    data = r.json()
                    self.token = data["access_token"]
                    # Refresh at 80 % of the lifetime, as a well-behaved client does.
                    self.token_expires_at = time.monotonic() + 0.8 * float(data["expires_in"])
                    return
                if r.status_code == 429:
                    INTENDED["token 429"] += 1
                    r.success()
                    time.sleep(min(2.0, float(r.headers.get("Retry-After") or 1)))
                    continue
                r.failure(f"{r.status_code}: {(r.text or '')[:200]}")
                return

    def open_account(self, name: str, overdraft: int | None) -> str | None:
        body = {"name": name, "currency": "USD", "overdraft_limit": overdraft}
        # Keyed too: a retry after a 5xx or a lost answer opens no second account.
        data = self._call("POST", "/api/accounts", "/api/accounts [POST]", body=body,
                          key=str(uuid.uuid4()))  # fmt: skip
        if data is None:
            return None
        account_id = str(data["data"]["id"])
        if overdraft is not None:
            self.accounts.append(account_id)
        return account_id

    def _pair(self) -> tuple[str, str] | None:
        if self.funding is None or len(self.accounts) < 2:
            return None
        if random.random() < 0.3:
            return self.funding, random.choice(self.accounts)
        debit, credit = random.sample(self.accounts, 2)
        return debit, credit

    # -- tasks --------------------------------------------------------------------

    @task(8)
    def transfer(self) -> None:
        pair = self._pair()
        if pair is None:
            return
        key = str(uuid.uuid4())
        body = {"debit_account_id": pair[0], "credit_account_id": pair[1],
                "amount": random.randint(1, 5_000), "currency": "USD"}  # fmt: skip
        # 422: the floor refuses a wallet without the funds (the ledger working).
        first = self._call("POST", "/api/transfers", "/api/transfers [POST]", body=body,
                           key=key, intended=(422,))  # fmt: skip
        if first is not None and random.random() < 0.1:
            # A client that lost the answer retries: the same transfer comes back.
            again = self._call("POST", "/api/transfers", "/api/transfers [replay]", body=body,
                               key=key)  # fmt: skip
            if again is not None and again["data"]["id"] != first["data"]["id"]:
                self.environment.events.request.fire(
                    request_type="CHECK", name="idempotent replay", response_time=0,
                    response_length=0, exception=AssertionError("replay made a new transfer"),
                )  # fmt: skip

    @task(3)
    def hold(self) -> None:
        pair = self._pair()
        if pair is None:
            return
        body = {"debit_account_id": pair[0], "credit_account_id": pair[1],
                "amount": random.randint(100, 5_000), "currency": "USD", "pending": True,
                "timeout_seconds": 3600}  # fmt: skip
        data = self._call("POST", "/api/transfers", "/api/transfers [hold]", body=body,
                          key=str(uuid.uuid4()), intended=(422,))  # fmt: skip
        if data is not None:
            self.holds.append(str(data["data"]["id"]))

    @task(3)
    def settle_hold(self) -> None:
        if not self.holds:
            return
        hold_id = self.holds.pop(random.randrange(len(self.holds)))
        if random.random() < 0.6:
            body = {} if random.random() < 0.5 else {"amount": 50}
            self._call("POST", f"/api/transfers/{hold_id}/post", "/api/transfers/{id}/post",
                       body=body, key=str(uuid.uuid4()))  # fmt: skip
        else:
            self._call("POST", f"/api/transfers/{hold_id}/void", "/api/transfers/{id}/void",
                       body={}, key=str(uuid.uuid4()))  # fmt: skip

    @task(10)
    def read_account(self) -> None:
        if self.accounts:
            account = random.choice(self.accounts)
            self._call("GET", f"/api/accounts/{account}", "/api/accounts/{id}")

    @task(5)
    def read_balance(self) -> None:
        if self.accounts:
            account = random.choice(self.accounts)
            self._call("GET", f"/api/accounts/{account}/balance", "/api/accounts/{id}/balance")

    @task(3)
    def read_statement(self) -> None:
        if self.accounts:
            account = random.choice(self.accounts)
            self._call("GET", f"/api/accounts/{account}/entries?limit=20",
                       "/api/accounts/{id}/entries")  # fmt: skip

    @task(2)
    def list_transfers(self) -> None:
        if self.accounts:
            account = random.choice(self.accounts)
            self._call("GET", f"/api/transfers?limit=20&account_id={account}",
                       "/api/transfers?account_id=")  # fmt: skip

    @task(1)
    def open_more(self) -> None:
        self.open_account("wallet extra", overdraft=0)

    @task(1)
    def refresh(self) -> None:
        # Some clients fetch a new token well before the old one expires.
        if random.random() < 0.05:
            self.refresh_token()
