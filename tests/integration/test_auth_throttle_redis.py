"""The failed-authentication throttle over Redis, as two API replicas see it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from contrackt.adapters.ratelimit.redis import RedisRateLimiter
from contrackt.api.auth_throttle import AuthThrottle
from contrackt.domain.errors import RateLimited
from tests.contract.services import service

pytestmark = pytest.mark.integration


@pytest.fixture
async def limiter() -> AsyncIterator[RedisRateLimiter]:
    rl = RedisRateLimiter.from_url(service("REDIS"), prefix=f"ctk-test-authfail-{uuid.uuid4().hex[:8]}")
    try:
        yield rl
    finally:
        keys = [k async for k in rl.client.scan_iter(f"{rl.prefix}:*")]
        if keys:
            await rl.client.delete(*keys)
        await rl.close()


async def failures_allowed(replicas: list[AuthThrottle], address: str, tries: int = 12) -> int:
    allowed = 0
    for i in range(tries):
        throttle = replicas[i % len(replicas)]
        client = throttle.hashed(address)
        try:
            throttle.check(client)
            await throttle.failed(client)
        except RateLimited:
            continue
        allowed += 1
    return allowed


async def test_replicas_with_a_shared_hash_key_share_one_allowance(limiter: RedisRateLimiter) -> None:
    key = b"k" * 32
    replicas = [AuthThrottle(limiter, "4/minute", hash_key=key) for _ in range(2)]
    assert await failures_allowed(replicas, "198.51.100.20") == 4
    # Redis holds the HMAC of the address, never the address.
    stored = [k.decode() async for k in limiter.client.scan_iter(f"{limiter.prefix}:*")]
    assert stored == [f"{limiter.prefix}:authfail:{replicas[0].hashed('198.51.100.20')}"]
    assert "198.51.100" not in stored[0]


async def test_without_a_shared_key_each_replica_counts_alone(limiter: RedisRateLimiter) -> None:
    replicas = [AuthThrottle(limiter, "4/minute") for _ in range(2)]
    assert await failures_allowed(replicas, "198.51.100.21") == 8
