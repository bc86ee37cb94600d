"""The SSRF guard: webhook URLs may only reach public HTTP(S) servers.

A URL is checked twice: when it is registered and again before every
delivery (DNS answers change). Every address the host resolves to must be
public; the dispatcher then connects to the address it checked, not to
whatever a second lookup would say, so DNS rebinding cannot slip through.
Redirects are never followed.

`allow_private` (TALLY_WEBHOOK_ALLOW_PRIVATE, dev and test only) lets
loopback and private addresses through; cloud metadata, multicast and
unspecified addresses are refused even then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL = 2048
RESOLVE_TIMEOUT = 2.0
_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack...
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(Exception):
    """The URL may not be used as a webhook target; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked URL's parts: connect to `host`:`port`, ask for `path`."""

    scheme: str
    host: str  # lower-case name or IP literal (IPv6 without brackets)
    port: int
    path: str  # path and query, at least "/"

    def url_for(self, address: IPAddress) -> str:
        """The URL with the host replaced by `address` (the checked one)."""
        literal = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def parse(url: str) -> Target:
    """Check a URL's form (scheme, no credentials, a host, a port); raises UnsafeUrl."""
    if not url or len(url) > MAX_URL:
        raise UnsafeUrl(f"must be 1 to {MAX_URL} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeUrl("must be ASCII without spaces or control characters (encode it)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("must use http or https")
    if "@" in parts.netloc:
        raise UnsafeUrl("must not carry credentials (user:password@)")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeUrl("must name a host")
    if _literal(host) is None and not _HOST.match(host):
        raise UnsafeUrl("has an invalid host name")
    if port == 0:
        raise UnsafeUrl("has an invalid port")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host.rstrip("."), port or (443 if scheme == "https" else 80), path)


def refusal(address: IPAddress, allow_private: bool = False) -> str | None:
    """Why a webhook may not connect to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal(embedded, allow_private)
            return reason and f"{reason} (embedded in {address})"
    if address in _METADATA:
        return f"{address} is a cloud metadata address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if allow_private:
        return None
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_private:
        return f"{address} is a private address"
    if address.is_reserved or not address.is_global:
        return f"{address} is not a public address"
    return None


async def resolve(
    target: Target, allow_private: bool = False, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Every address of the target's host, each one checked; raises UnsafeUrl."""
    literal = _literal(target.host)
    if literal is not None:
        found = [literal]
    else:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                names = await (resolver or _getaddrinfo)(target.host, target.port)
        except (OSError, TimeoutError, UnicodeError):
            raise UnsafeUrl(f"host {target.host!r} does not resolve") from None
        found = [ipaddress.ip_address(name.split("%", 1)[0]) for name in names]
        if not found:
            raise UnsafeUrl(f"host {target.host!r} does not resolve")
    for address in found:
        reason = refusal(address, allow_private)
        if reason is not None:
            raise UnsafeUrl(f"resolves to a forbidden address: {reason}")
    return list(dict.fromkeys(found))


async def check(url: str, allow_private: bool = False, resolver: Resolver | None = None) -> Target:
    """Parse and resolve `url`; raises UnsafeUrl when it may not be used."""
    target = parse(url)
    await resolve(target, allow_private, resolver)
    return target


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]
