"""Pure rules: the SSRF guard's address table and URL forms, retry delays, circuit
states, signatures and the webhook settings."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import pytest

from service.config import ConfigError, Settings
from service.webhooks import policy, signing, ssrf

REFUSED = [
    "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.31.0.1", "192.168.0.1", "100.64.1.1",
    "169.254.169.254", "169.254.1.1", "0.0.0.0", "224.0.0.251", "255.255.255.255",
    "192.0.2.10", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:a9fe:a9fe::", "64:ff9b::7f00:1",
    "2001:db8::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]  # fmt: skip
ALLOWED = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.215.14"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str):
    assert ssrf.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str):
    assert ssrf.refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "::1", "fe80::1"])
def test_allow_private_lets_private_targets_through(address: str):
    assert ssrf.refusal(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1", "::ffff:169.254.169.254"],
)
def test_metadata_multicast_and_unspecified_stay_refused_with_allow_private(address: str):
    assert ssrf.refusal(ipaddress.ip_address(address), allow_private=True) is not None


def test_parse_keeps_path_query_and_default_ports():
    target = ssrf.parse("HTTPS://Hooks.Example.com/a/b?x=1#frag")
    assert (target.scheme, target.host, target.port, target.path) == (
        "https", "hooks.example.com", 443, "/a/b?x=1",
    )  # fmt: skip
    address = ipaddress.ip_address("2606:4700:4700::1111")
    assert target.url_for(address) == "https://[2606:4700:4700::1111]:443/a/b?x=1"
    assert target.host_header == "hooks.example.com"
    assert ssrf.parse("http://h.example:8080").host_header == "h.example:8080"


async def test_every_resolved_address_must_be_public():
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    with pytest.raises(ssrf.UnsafeUrl, match="private"):
        await ssrf.check("https://mixed.example/", resolver=mixed)

    async def fails(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(ssrf.UnsafeUrl, match="does not resolve"):
        await ssrf.check("https://gone.example/", resolver=fails)


def test_retry_delays_follow_the_schedule_with_bounded_jitter():
    schedule = (5.0, 30.0)
    rng = random.Random(7)
    for _ in range(200):
        first = policy.retry_delay(schedule, 1, rng)
        second = policy.retry_delay(schedule, 2, rng)
        assert first is not None and 4.0 <= first <= 6.0
        assert second is not None and 24.0 <= second <= 36.0
    assert policy.retry_delay(schedule, 3, rng) is None
    assert policy.retry_delay((), 1, rng) is None
    delays = {policy.retry_delay(schedule, 1, rng) for _ in range(20)}
    assert len(delays) > 1  # jittered, not in lockstep


def test_default_schedule_spans_about_a_day():
    assert 20 * 3600 <= sum(Settings().webhook_retry_schedule) <= 24 * 3600


def test_circuit_states():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.circuit_state(0, None, now, 3) == "closed"
    assert policy.circuit_state(2, None, now, 3) == "closed"
    assert policy.circuit_state(3, now + timedelta(seconds=1), now, 3) == "open"
    assert policy.circuit_state(3, now - timedelta(seconds=1), now, 3) == "half_open"


def test_signature_header_round_trip_and_rejections():
    body = b'{"id": "x"}'
    value = signing.header("whsec_k", body, timestamp=1_700_000_000)
    assert value.startswith("t=1700000000,v1=")
    assert signing.verify("whsec_k", body, value, now=1_700_000_100) == 1_700_000_000
    for bad in (None, "", "v1=abc", "t=abc,v1=def", "t=1700000000"):
        with pytest.raises(signing.InvalidSignature):
            signing.verify("whsec_k", body, bad, now=1_700_000_000)
    with pytest.raises(signing.InvalidSignature):
        signing.verify("whsec_k", body, value, now=1_700_000_000 + 301)


BASE = {"TALLY_ENV": "test", "TALLY_JWT_SECRET": "s" * 40, "TALLY_ENCRYPTION_KEY": "A" * 43}


def test_webhook_settings_from_the_environment():
    s = Settings.from_env({
        **BASE, "TALLY_WEBHOOK_RETRY_SCHEDULE": "1,2.5", "TALLY_WEBHOOK_ALLOW_PRIVATE": "1",
        "TALLY_WEBHOOK_TIMEOUT_SECONDS": "3", "TALLY_WEBHOOK_BREAKER_THRESHOLD": "7",
    })  # fmt: skip
    assert s.webhook_retry_schedule == (1.0, 2.5) and s.webhook_allow_private
    assert s.webhook_timeout_seconds == 3.0 and s.webhook_breaker_threshold == 7
    assert (
        Settings.from_env({**BASE, "TALLY_WEBHOOK_RETRY_SCHEDULE": "none"}).webhook_retry_schedule
        == ()
    )


@pytest.mark.parametrize(
    "env",
    [
        {"TALLY_ENV": "production", "TALLY_WEBHOOK_ALLOW_PRIVATE": "1"},
        {"TALLY_WEBHOOK_RETRY_SCHEDULE": "5,x"},
        {"TALLY_WEBHOOK_RETRY_SCHEDULE": "5,-1"},
        {"TALLY_WEBHOOK_TIMEOUT_SECONDS": "10", "TALLY_WEBHOOK_LEASE_SECONDS": "5"},
        {"TALLY_WEBHOOK_TIMEOUT_SECONDS": "0"},
    ],
)
def test_bad_webhook_settings_are_refused(env):
    with pytest.raises(ConfigError):
        Settings.from_env({**BASE, **env})
