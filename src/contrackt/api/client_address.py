"""Who is on the other end of a request: the TCP peer, or X-Forwarded-For from a trusted proxy.

``X-Forwarded-For`` is believed only when the peer is one of the proxies named in
CONTRACKT_TRUSTED_PROXIES (addresses or networks, comma-separated; default: none,
so the header is ignored).  The chain is read right to left, skipping trusted
proxies: the first address no trusted proxy vouches for is the client (a client
cannot forge its way past the proxy that appended its real address).

The result is only ever used hashed (see ``auth_throttle``): it is never logged or stored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN = "unknown"


def parse_trusted(value: str) -> tuple[Network, ...]:
    """'10.0.0.0/8, 127.0.0.1' -> networks; a bad entry fails loudly at start-up."""
    out: list[Network] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"CONTRACKT_TRUSTED_PROXIES: {item!r} is not an address or network") from None
    return tuple(out)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: Address, trusted: Sequence[Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address as text, or 'unknown'.

    An IPv6 client is reduced to its /64: one subscriber holds a whole /64, and
    counting its addresses one by one would give it 2^64 allowances.
    """
    addr = _address(peer) if peer else None
    if addr is not None and trusted and _trusted(addr, trusted):
        hops = [h for header in forwarded_for for h in header.split(",")]
        for hop in reversed(hops):
            candidate = _address(hop)
            if candidate is None:
                break  # garbage in the chain: stop believing it, keep the last good hop
            addr = candidate
            if not _trusted(candidate, trusted):
                break
    if addr is None:
        return UNKNOWN
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def request_client(request: Request, trusted: Sequence[Network]) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)
