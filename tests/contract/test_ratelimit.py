"""RateLimiter contract (GCRA): memory and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from contrackt.ports.ratelimit import RateLimiter
from tests.contract.services import service


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        from contrackt.adapters.ratelimit.memory import MemoryRateLimiter

        yield MemoryRateLimiter()
        return
    from contrackt.adapters.ratelimit.redis import RedisRateLimiter

    rl = RedisRateLimiter.from_url(service("REDIS"), prefix=f"ctk-test-rl-{uuid.uuid4().hex[:8]}")
    try:
        yield rl
    finally:
        keys = [k async for k in rl.client.scan_iter(f"{rl.prefix}:*")]
        if keys:
            await rl.client.delete(*keys)
        await rl.close()


async def test_allows_limit_then_refuses(limiter: RateLimiter) -> None:
    key = uuid.uuid4().hex
    decisions = [await limiter.hit(key, 5, 10.0) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after_s == 0 for d in decisions)
    refused = await limiter.hit(key, 5, 10.0)
    assert not refused.allowed
    assert refused.remaining == 0
    # One request's worth of time (period / limit) must pass.
    assert 1.5 < refused.retry_after_s <= 2.0
    assert 8.0 < refused.reset_s <= 10.0
    other = await limiter.hit(uuid.uuid4().hex, 5, 10.0)  # keys are independent
    assert other.allowed


async def test_no_double_burst(limiter: RateLimiter) -> None:
    key = uuid.uuid4().hex
    for _ in range(4):
        assert (await limiter.hit(key, 4, 1.0)).allowed
    assert not (await limiter.hit(key, 4, 1.0)).allowed
    await asyncio.sleep(0.3)  # a bit more than one interval (0.25 s): exactly one more
    assert (await limiter.hit(key, 4, 1.0)).allowed
    assert not (await limiter.hit(key, 4, 1.0)).allowed
    await asyncio.sleep(1.05)  # the full period: the whole allowance, not twice it
    allowed = [(await limiter.hit(key, 4, 1.0)).allowed for _ in range(6)]
    assert allowed.count(True) == 4


async def test_concurrent_hits_are_atomic(limiter: RateLimiter) -> None:
    key = uuid.uuid4().hex
    decisions = await asyncio.gather(*(limiter.hit(key, 10, 60.0) for _ in range(30)))
    assert sum(d.allowed for d in decisions) == 10
