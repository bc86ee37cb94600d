"""The real thing: granian serving the app as a subprocess, spoken to over TCP."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("server did not stop on signal") from None


def production_env(database_url: str, redis_url: str, port: int, **extra: str) -> dict[str, str]:
    """Environment for `tally serve` in production mode with fresh secrets on `port`."""
    return {
        **os.environ,
        "TALLY_ENV": "production",
        "TALLY_DATABASE_URL": database_url,
        "TALLY_REDIS_URL": redis_url,
        "TALLY_JWT_SECRET": secrets.token_urlsafe(48),
        "TALLY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TALLY_PORT": str(port),
        **extra,
    }


@pytest.fixture
def served(database_url, redis_url, repo_root, tmp_path):
    port = free_port()
    env = production_env(
        database_url,
        redis_url,
        port,
        TALLY_WORKERS="2",
        TALLY_DATA_DIR=str(tmp_path),
        TALLY_BODY_TIMEOUT_SECONDS="1",
    )
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        cwd=repo_root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


async def test_granian_serves_the_api_over_tcp(served, tenant):
    base, proc = served
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        r = await http.post(
            "/api/auth/token",
            json={"client_id": str(tenant.client_id), "client_secret": tenant.client_secret},
        )
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await http.post(
            "/api/accounts", json={"name": "Till", "currency": "EUR"}, headers=headers
        )
        assert r.status_code == 201, r.text
        account = r.json()["data"]
        r = await http.get(f"/api/accounts/{account['id']}", headers=headers)
        assert r.status_code == 200 and r.json()["data"]["name"] == "Till"
        assert r.headers["etag"] == '"1"' and r.headers["x-request-id"]
        r = await http.get("/api/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        r = await http.post(
            "/api/accounts",
            content=b"{not json",
            headers={**headers, "Content-Type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST"
        assert (await http.get("/readyz")).status_code == 200
    assert stop(proc) == 0


def test_a_body_that_never_arrives_is_408_and_the_connection_closed(served, tenant):
    """granian waits for a body as long as the client keeps the connection;
    the Envelope's deadline answers instead, and nothing is written."""
    base, _proc = served
    port = int(base.rsplit(":", 1)[1])
    r = httpx.post(
        f"{base}/api/auth/token",
        json={"client_id": str(tenant.client_id), "client_secret": tenant.client_secret},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    head = (
        "POST /api/accounts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.encode() + b'{"name": "never", ')
        answer = b""
        while b"}}" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        status, _, rest = answer.partition(b"\r\n")
        assert status == b"HTTP/1.1 408 Request Timeout", answer
        head, _, body_bytes = rest.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower().split(b"\r\n"), head
        body = json.loads(body_bytes)
        assert body["error"]["code"] == "REQUEST_TIMEOUT"
        assert body["error"]["details"] == {"timeout_seconds": 1.0}
        sock.sendall(b" " * 82)  # the rest of the declared body: too late, not a request
        assert sock.recv(65536) == b""  # granian closed the connection
    auth = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{base}/api/accounts", headers=auth, timeout=10)
    assert listed.status_code == 200 and listed.json()["data"] == []


def read_banner(proc: subprocess.Popen, log: Path, seconds: float = 90) -> dict[str, str]:
    """Fields printed by `tally dev` before it starts serving."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = log.read_text()
        if "API reference" in text:
            found = {}
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] in ("client_id", "secret"):
                    found[parts[0]] = parts[1]
            return found
        if proc.poll() is not None:
            raise AssertionError(f"tally dev exited with {proc.returncode}:\n{text}")
        time.sleep(0.1)
    raise AssertionError("no banner")


def run_dev(repo_root: Path, data_dir: Path, port: int) -> tuple[subprocess.Popen, dict[str, str]]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("TALLY_DATABASE_URL", "TALLY_REDIS_URL")
    }
    env.update(
        {
            "TALLY_ENV": "dev",
            "TALLY_DATA_DIR": str(data_dir),
            # Beside the data, so that it goes with it even when a test kills
            # the server outright (a temporary one would then be left behind).
            "PROMETHEUS_MULTIPROC_DIR": str(data_dir.parent / "metrics"),
            "TALLY_PORT": str(port),
            "TALLY_WORKERS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = data_dir.parent / f"dev-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "dev"],
            cwd=repo_root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return proc, read_banner(proc, log)


def dev_token(base: str, creds: dict[str, str]) -> str:
    """An access token for the dev client `tally dev` printed."""
    r = httpx.post(
        f"{base}/api/auth/token",
        json={"client_id": creds["client_id"], "client_secret": creds["secret"]},
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@pytest.fixture
def outside_basetemp():
    # The embedded PostgreSQL runs as its own user; pytest's basetemp is 0700.
    path = Path(tempfile.mkdtemp(prefix="tally-dev-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_make_run_flow_with_embedded_servers(repo_root, outside_basetemp):
    """`tally dev`: embedded databases, printed credentials that work, clean Ctrl-C."""
    data_dir = outside_basetemp / "dot-tally"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, creds = run_dev(repo_root, data_dir, port)
    try:
        wait_healthy(base, proc)
        token = dev_token(base, creds)
        r = httpx.post(
            f"{base}/api/accounts",
            json={"name": "Wallet", "currency": "USD"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        account_id = r.json()["data"]["id"]
    finally:
        code = stop(proc, signal.SIGINT)
    assert code == 0
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # PostgreSQL stopped cleanly
    assert (data_dir / "dev-secrets.json").exists()

    # Data and credentials persist into the next run.
    proc, again = run_dev(repo_root, data_dir, port)
    try:
        wait_healthy(base, proc)
        assert again == creds
        r = httpx.get(
            f"{base}/api/accounts/{account_id}",
            headers={"Authorization": f"Bearer {dev_token(base, creds)}"},
        )
        assert r.status_code == 200 and json.loads(r.text)["data"]["name"] == "Wallet"
    finally:
        assert stop(proc, signal.SIGINT) == 0
    # Dev mode logs plain text, the CLI's lines and the server's alike.
    for log in outside_basetemp.glob("dev-*.log"):
        json_lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        assert json_lines == [], json_lines[:3]


def _processes_in(where: Path) -> list:
    """Live processes running in `where` or with it on their command line (the
    embedded postgres and valkey-server of a data directory)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        places = [*(process.info["cmdline"] or ()), process.info["cwd"] or ""]
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(
            str(where) in place for place in places
        ):
            found.append(process)
    return found


def test_make_run_after_kill_9_takes_over_what_the_crash_left(repo_root, outside_basetemp):
    """`tally dev` killed outright, then started again: same data and credentials,
    its embedded servers taken over (not a second Valkey), nothing left after Ctrl-C."""
    data_dir = outside_basetemp / "dot-tally"
    try:
        _crash_and_restart(repo_root, data_dir)
        assert not (data_dir / "pg" / "postmaster.pid").exists()
        assert _processes_in(data_dir) == []
    finally:  # a failure must not leave them running either
        for process in _processes_in(data_dir):
            process.kill()


def _crash_and_restart(repo_root: Path, data_dir: Path) -> None:
    import psutil

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, creds = run_dev(repo_root, data_dir, port)
    try:
        wait_healthy(base, proc)
        valkey = psutil.Process(int((data_dir / "valkey" / "valkey.pid").read_text()))
    finally:
        proc.kill()
        proc.wait()
    # Its granian worker follows it out (PR_SET_PDEATHSIG) and frees the port...
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.2)
    else:
        raise AssertionError("the killed server's port stayed open")
    # ...but its databases are still running: the case under test.
    assert valkey.is_running() and (data_dir / "pg" / "postmaster.pid").exists()

    proc, again = run_dev(repo_root, data_dir, port)
    try:
        wait_healthy(base, proc)
        assert again == creds
        assert dev_token(base, creds)
        assert not valkey.is_running() or valkey.status() == psutil.STATUS_ZOMBIE
        valkeys = [p for p in _processes_in(data_dir) if "valkey" in p.name()]
        assert len(valkeys) == 1, valkeys
    finally:
        assert stop(proc, signal.SIGINT) == 0


def test_serves_https_with_a_trustme_certificate(database_url, redis_url, repo_root, tmp_path):
    import ssl

    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    # granian reads PKCS#8 keys only.
    private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    port = free_port()
    env = production_env(
        database_url, redis_url, port,
        TALLY_WORKERS="1", TALLY_TLS_CERT=str(cert), TALLY_TLS_KEY=str(key),
    )  # fmt: skip
    with (tmp_path / "server.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=repo_root,
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    context = ssl.create_default_context()
    ca.configure_trust(context)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text()) from None
                time.sleep(0.2)
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}
        # Plain HTTP on the TLS port gets nowhere.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        # An untrusted client refuses the certificate.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        assert stop(proc) == 0
