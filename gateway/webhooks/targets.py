"""SSRF guard: resolve a webhook's host once, refuse non-public addresses, pin the address.

The request then goes to the checked address (with the original Host header and TLS
server name), so a DNS answer that changes between the check and the connection
(rebinding) cannot redirect it to an internal service.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The webhook's target may not be contacted; the message carries no personal data."""


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL  # the original URL with its host replaced by the checked address
    host_header: str
    extensions: dict[str, str] = field(default_factory=dict)


def is_public(address: IPAddress) -> bool:
    """Neither private, loopback, link-local, reserved, multicast nor unspecified."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local
        or address.is_reserved or address.is_multicast or address.is_unspecified
    )


async def _addresses(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # sockaddr[0] may carry an IPv6 scope ("fe80::1%eth0"); the scope is not part of the check.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def resolve_target(url: str, *, allow_private: bool) -> Target:
    """Check the scheme and every address the host resolves to; raise TargetRefused or OSError."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TargetRefused("only http and https URLs with a host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _addresses(parsed.host, port)
    if not addresses:
        raise TargetRefused("the host has no address")
    if not allow_private and not all(is_public(address) for address in addresses):
        raise TargetRefused("the host resolves to a non-public address")
    pinned = str(addresses[0])
    is_name = pinned != parsed.host
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" and is_name else {}
    return Target(url=parsed.copy_with(host=pinned), host_header=parsed.netloc.decode("ascii"),
                  extensions=extensions)
