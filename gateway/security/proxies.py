"""The client's address and scheme: X-Forwarded-* believed only from the proxies we trust.

Anyone can send `X-Forwarded-For`; believing it from every peer would let a client pick
the address that every per-address limit counts. Behind a trusted proxy the address is
the right-most one in the header that is not itself a trusted proxy: the left part was
written by the client and proves nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = frozenset({"http", "https"})


def parse_address(text: str) -> Address | None:
    """An IPv4-mapped IPv6 address counts as its IPv4 one (dual-stack sockets report those)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxyMiddleware:
    """Rewrites `scope["client"]` and `scope["scheme"]` from the headers of trusted peers only."""

    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted)

    def is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def forwarded_client(self, peer: Address, chain: str) -> Address:
        """Walk from the right past trusted hops; a malformed entry ends the walk at the peer."""
        entries = [entry for entry in chain.split(",") if entry.strip()]
        client = peer
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                return peer
            client = address
            if not self.is_trusted(address):
                return address
        return client  # every hop is a trusted proxy: the farthest one we know of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.trusted or not scope.get("client"):
            await self.app(scope, receive, send)
            return
        peer = parse_address(scope["client"][0])
        if peer is None or not self.is_trusted(peer):
            await self.app(scope, receive, send)
            return
        chain = ",".join(value.decode("latin-1") for name, value in scope["headers"]
                         if name == b"x-forwarded-for")
        proto = [value.decode("latin-1").strip().lower() for name, value in scope["headers"]
                 if name == b"x-forwarded-proto"]
        scope = dict(scope)
        client = self.forwarded_client(peer, chain)
        if client != peer:
            scope["client"] = (str(client), 0)
        if len(proto) == 1 and proto[0] in SCHEMES:  # set by the proxy, never a list
            scope["scheme"] = proto[0]
        await self.app(scope, receive, send)


def client_address(request: Request) -> str:
    """The address every per-address limit counts (already corrected by the middleware)."""
    return request.client.host if request.client else "unknown"
