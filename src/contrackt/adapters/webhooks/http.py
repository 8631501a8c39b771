"""Webhook transport over httpcore: every connection's addresses checked, bounded in time and bytes read.

The address check sits in the network backend, at the moment of connecting: the host is resolved
there, every address it resolves to must pass the egress rules (domain/egress.py), and the socket
is opened to one of those same checked addresses. A host that resolved to a public address when
the webhook was registered and to 127.0.0.1 now (DNS rebinding) is refused at delivery. TLS still
verifies the certificate against the URL's host name. One connection pool per delivery (nothing
kept between tenants' endpoints), no redirects (httpcore never follows them), no proxies from the
environment, and at most MAX_RESPONSE_BYTES of the answer's body read and then discarded.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import certifi
import httpcore

from contrackt.domain.egress import EgressRefused, check_address, literal_address, parse_target
from contrackt.domain.webhooks import MAX_RESPONSE_BYTES, SendOutcome

Resolver = Callable[[str, int], Awaitable[list[str]]]

USER_AGENT = "Contrackt-Webhooks/1"
RESOLVE_TIMEOUT_S = 5.0


class DnsFailure(OSError):
    """The host did not resolve (or not in time)."""


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise DnsFailure(f"{type(exc).__name__}") from None
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, then connects to a checked one (never to a name)."""

    def __init__(self, resolve: Resolver, *, allow_private: bool) -> None:
        self._resolve = resolve
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = literal_address(host)
        addresses = [literal] if literal else await self._resolve(host, port)
        if not addresses:
            raise DnsFailure("no address")
        for address in addresses:  # all of them: one private answer among public ones is refused too
            check_address(address, allow_private=self._allow_private)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def error_class(exc: BaseException) -> str:
    """A short, stable name for why an attempt got no HTTP status (shown to the tenant)."""
    if isinstance(exc, EgressRefused):
        return "address_refused"
    if isinstance(exc, DnsFailure):
        return "dns_error"
    if isinstance(exc, TimeoutError | httpcore.TimeoutException):
        return "timeout"
    if isinstance(exc, httpcore.ConnectError):
        return "tls_error" if isinstance(exc.__cause__, ssl.SSLError) else "connect_error"
    if isinstance(exc, httpcore.ProtocolError):
        return "protocol_error"
    if isinstance(exc, httpcore.NetworkError):
        return "network_error"
    return "error"


class HttpWebhookTransport:
    def __init__(
        self,
        *,
        allow_private: bool,
        timeout_s: float,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self._resolve = resolver or system_resolve
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())

    async def resolve(self, host: str, port: int) -> list[str]:
        return await self._resolve(host, port)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> SendOutcome:
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            parse_target(url, allow_private=self.allow_private)  # the rules may have changed since registration
        except EgressRefused:
            return SendOutcome(None, "url_refused", took())
        sent = [(k.encode(), v.encode()) for k, v in headers.items()]
        sent += [(b"user-agent", USER_AGENT.encode()), (b"connection", b"close")]
        limit = self.timeout_s
        try:
            async with asyncio.timeout(limit):
                backend = GuardedBackend(self._resolve, allow_private=self.allow_private)
                async with httpcore.AsyncConnectionPool(
                    ssl_context=self._ssl, network_backend=backend, max_connections=1, retries=0
                ) as pool:
                    async with pool.stream(
                        "POST",
                        url,
                        headers=sent,
                        content=body,
                        extensions={"timeout": {"connect": limit, "read": limit, "write": limit, "pool": limit}},
                    ) as response:
                        read = 0
                        async for chunk in response.aiter_stream():
                            read += len(chunk)
                            if read >= MAX_RESPONSE_BYTES:
                                break  # the rest is never read: the connection is dropped
                        status = int(response.status)
        except Exception as exc:
            return SendOutcome(None, error_class(exc), took())
        return SendOutcome(status, None, took())
