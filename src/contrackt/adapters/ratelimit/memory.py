"""In-memory GCRA rate limiter (embedded mode): smooth, no double burst at window edges."""

from __future__ import annotations

import time

from contrackt.ports.ratelimit import RateDecision

_EPSILON = 1e-6


def gcra(tat: float, now: float, limit: int, period_s: float) -> tuple[bool, float, RateDecision]:
    """One GCRA step: (allowed, new theoretical arrival time, decision)."""
    interval = period_s / limit
    tat = max(tat, now)
    new_tat = tat + interval
    allow_at = new_tat - period_s
    if allow_at > now + _EPSILON:  # tolerance: repeated float sums must not eat the last slot of a burst
        remaining = 0
        return False, tat, RateDecision(False, limit, remaining, tat - now, allow_at - now)
    remaining = max(0, int((now - allow_at) // interval))
    return True, new_tat, RateDecision(True, limit, min(limit - 1, remaining), new_tat - now, 0.0)


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._now = time.monotonic

    async def hit(self, key: str, limit: int, period_s: float) -> RateDecision:
        now = self._now()
        allowed, tat, decision = gcra(self._tat.get(key, now), now, limit, period_s)
        if allowed:
            self._tat[key] = tat
        if len(self._tat) > 100_000:  # forget idle keys
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return decision

    async def close(self) -> None:
        return None
