"""GCRA rate limiter in Redis (one Lua script, atomic; the server's clock for every API process)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from contrackt.ports.ratelimit import RateDecision

# The same steps as adapters/ratelimit/memory.py's ``gcra``. KEYS[1]: the TAT key;
# ARGV: limit, period (s). Floats travel as strings (Lua numbers become integers).
GCRA_LUA = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now + 0.000001 then  -- tolerance: float sums must not eat a burst's last slot
  return {0, 0, tostring(tat - now), tostring(allow_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000))
local remaining = math.floor((now - allow_at) / interval)
if remaining > limit - 1 then remaining = limit - 1 end
if remaining < 0 then remaining = 0 end
return {1, remaining, tostring(new_tat - now), '0'}
"""


class RedisRateLimiter:
    def __init__(self, client: Redis, prefix: str = "contrackt:rl") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(GCRA_LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "contrackt:rl") -> RedisRateLimiter:
        return cls(Redis.from_url(url), prefix)

    async def hit(self, key: str, limit: int, period_s: float) -> RateDecision:
        if limit <= 0:
            return RateDecision(False, limit, 0, period_s, period_s)
        raw: Any = await self._script(keys=[f"{self.prefix}:{key}"], args=[limit, repr(float(period_s))])
        allowed, remaining, reset_s, retry_after_s = raw
        return RateDecision(
            allowed=bool(int(allowed)),
            limit=limit,
            remaining=int(remaining),
            reset_s=float(reset_s),
            retry_after_s=float(retry_after_s),
        )

    async def close(self) -> None:
        await self.client.aclose()
