"""Where the service may send requests on a tenant's behalf (webhooks): URL and address rules (pure).

A webhook URL is chosen by a tenant, so without rules it would let a tenant make the service
call its own private network, the cloud's metadata endpoint or loopback services (SSRF). The
rules: https only, no credentials in the URL, and every address the host resolves to must be
public. The same address check runs again on every connection (DNS rebinding: a host that was
public at registration may resolve to 127.0.0.1 later). ``allow_private`` (for tests and
private deployments) also lets http and loopback, RFC 1918, ULA and shared (CGNAT) addresses
through; unspecified, multicast, link-local (169.254.169.254 included), reserved ranges and
translated addresses embedding a non-public IPv4 stay refused whatever the setting.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

MAX_URL_LENGTH = 2000

# Address classes that ``allow_private`` lets through; every other non-public class is refused always.
PRIVATE_CLASSES = frozenset({"loopback", "private", "unique_local", "shared"})

_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_ULA = ipaddress.ip_network("fc00::/7")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(ValueError):
    """The URL or one of its addresses is not allowed; ``reason`` is safe to show the tenant."""

    def __init__(self, reason: str, address_class: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.address_class = address_class


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a translated IPv6 address carries (6to4, NAT64), if any."""
    if addr.sixtofour is not None:
        return addr.sixtofour
    if any(addr in net for net in _NAT64):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def address_class(address: str | Address) -> str | None:
    """The non-public class of ``address`` ("loopback", "link_local", ...), or None when it is public."""
    addr = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return address_class(addr.ipv4_mapped)
        embedded = _embedded_ipv4(addr)
        if embedded is not None and address_class(embedded) is not None:
            return "translated"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_multicast:
        return "multicast"
    if addr.is_link_local:
        return "link_local"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in _ULA:
            return "unique_local"
    else:
        if any(addr in net for net in _RFC1918):
            return "private"
        if addr in _SHARED:
            return "shared"
    if not addr.is_global:
        return "reserved"
    return None


def literal_address(host: str) -> str | None:
    """``host`` itself when it is an IP address (nothing to resolve), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_address(address: str, *, allow_private: bool) -> None:
    """Raise EgressRefused unless a request may go to ``address``."""
    try:
        cls = address_class(address)
    except ValueError:
        raise EgressRefused("the host resolved to something that is not an IP address") from None
    if cls is None or (allow_private and cls in PRIVATE_CLASSES):
        return
    raise EgressRefused(f"the URL's host resolves to a {cls.replace('_', '-')} address, which is not allowed", cls)


@dataclass(frozen=True)
class TargetUrl:
    """A webhook URL that passed the syntactic rules (addresses are checked separately)."""

    url: str
    scheme: str
    host: str  # without brackets for IPv6 literals
    port: int

    @property
    def without_query(self) -> str:
        """The URL as the audit trail and logs may keep it: no query string, no fragment."""
        return redacted_url(self.url)


def redacted_url(url: str) -> str:
    """``url`` without its query string, fragment and credentials."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_target(url: str, *, allow_private: bool) -> TargetUrl:
    """Check a webhook URL's form: https (http only with ``allow_private``), a host, no credentials."""
    if len(url) > MAX_URL_LENGTH:
        raise EgressRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise EgressRefused("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EgressRefused("the URL is not valid") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        raise EgressRefused("the URL must use https")
    if "@" in parts.netloc:
        raise EgressRefused("the URL must not carry credentials (receivers check the signature instead)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EgressRefused("the URL has no host")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        raise EgressRefused("the URL's host must be ASCII (use its punycode form)") from None
    if parts.fragment:
        raise EgressRefused("the URL must not have a fragment")
    return TargetUrl(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))
