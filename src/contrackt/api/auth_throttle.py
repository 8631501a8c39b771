"""Failed authentications throttled per client address (CONTRACKT_AUTH_FAILURE_LIMIT).

Each failed API-key check from an address is a hit on the rate limiter (memory or
Redis) under ``authfail:<HMAC(address)>``.  The hit that goes over the limit answers
429 ``rate_limited`` instead of 401, and the address is then refused at once, before
any key is looked at, until the limiter's Retry-After has passed: while refused, a
right key and a wrong one get the same answer, so the 429 tells nothing about keys.

The block itself is remembered in this process only (the limiter's port has no
"peek"); with several API replicas on one Redis, each replica learns of a block at
the address's next failure there, so an address gets at most the limit plus one
try per replica in a window.

The address never leaves this module in clear: the limiter's key is an HMAC under
CONTRACKT_CLIENT_HASH_KEY when set (every replica then counts together), else under
a random key of this process (replicas count separately; a restart forgets).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Sequence

from starlette.requests import Request

from contrackt.api.client_address import Network, request_client
from contrackt.domain.errors import RateLimited
from contrackt.ports.ratelimit import RateLimiter
from contrackt.settings import parse_rate

MAX_BLOCKED = 100_000  # addresses remembered as blocked (each for seconds only)
MESSAGE = "Too many failed authentications from this address; retry later"


class AuthThrottle:
    def __init__(
        self,
        limiter: RateLimiter,
        rate: str,
        trusted_proxies: Sequence[Network] = (),
        hash_key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.limit, self.period = parse_rate(rate)
        self.trusted = tuple(trusted_proxies)
        self._key = hash_key or secrets.token_bytes(32)
        self._clock = clock
        self._blocked: dict[str, float] = {}  # hashed address -> monotonic time it may try again

    def client(self, request: Request) -> str:
        """The hashed client address of ``request`` (the limiter's key; never the address)."""
        return self.hashed(request_client(request, self.trusted))

    def hashed(self, address: str) -> str:
        return hmac.new(self._key, address.encode(), hashlib.sha256).hexdigest()[:32]

    def check(self, client: str) -> None:
        """Refuse (429) an address inside its block, before its key is checked."""
        until = self._blocked.get(client)
        if until is None:
            return
        left = until - self._clock()
        if left <= 0:
            del self._blocked[client]
            return
        raise RateLimited(MESSAGE, retry_after=max(1, math.ceil(left)))

    async def failed(self, client: str) -> None:
        """Count one failed authentication; over the limit, block the address and raise 429."""
        decision = await self.limiter.hit(f"authfail:{client}", self.limit, self.period)
        if decision.allowed:
            return
        now = self._clock()
        if len(self._blocked) >= MAX_BLOCKED:
            self._blocked = {k: v for k, v in self._blocked.items() if v > now}
        if len(self._blocked) < MAX_BLOCKED:
            self._blocked[client] = now + decision.retry_after_s
        raise RateLimited(MESSAGE, retry_after=max(1, math.ceil(decision.retry_after_s)))
