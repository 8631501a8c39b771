"""Results in Redis with a TTL: the key expires with the result (``PX`` until ``expires_at``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis


class RedisResultStore:
    """Key ``contrackt:result:{tenant_id}:{job_id}``; the value is the (already encrypted) ciphertext."""

    def __init__(self, client: Redis, prefix: str = "contrackt:result") -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "contrackt:result") -> RedisResultStore:
        return cls(Redis.from_url(url), prefix)

    def _key(self, tenant_id: str, job_id: str) -> str:
        return f"{self.prefix}:{tenant_id}:{job_id}"

    async def put(self, tenant_id: str, job_id: str, ciphertext: bytes, expires_at: datetime) -> None:
        ttl_ms = int((expires_at - datetime.now(UTC)).total_seconds() * 1000)
        key = self._key(tenant_id, job_id)
        if ttl_ms <= 0:
            await self.client.delete(key)
            return
        await self.client.set(key, ciphertext, px=ttl_ms)

    async def get(self, tenant_id: str, job_id: str) -> bytes | None:
        value: Any = await self.client.get(self._key(tenant_id, job_id))
        return bytes(value) if value is not None else None

    async def read(self, tenant_id: str, job_id: str, offset: int, length: int) -> bytes | None:
        if offset < 0 or length < 1:
            raise ValueError("offset must be >= 0 and length >= 1")
        key = self._key(tenant_id, job_id)
        # One MULTI/EXEC: GETRANGE alone cannot tell a missing key from reading past the end.
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.getrange(key, offset, offset + length - 1)
            exists, value = await pipe.execute()
        return bytes(value) if exists else None

    async def delete(self, tenant_id: str, job_id: str) -> None:
        await self.client.delete(self._key(tenant_id, job_id))

    async def purge_expired(self, now: datetime) -> int:
        return 0  # Redis expires keys by itself

    async def close(self) -> None:
        await self.client.aclose()
