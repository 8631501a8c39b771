"""Port: request rate limits per API key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # seconds until the full allowance is back
    retry_after_s: float  # 0 when allowed


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, period_s: float) -> RateDecision: ...

    async def close(self) -> None: ...
