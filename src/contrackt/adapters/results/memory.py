"""In-memory result store (unit tests)."""

from __future__ import annotations

from datetime import UTC, datetime


class MemoryResultStore:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], tuple[bytes, datetime]] = {}

    async def put(self, tenant_id: str, job_id: str, ciphertext: bytes, expires_at: datetime) -> None:
        self.items[(tenant_id, job_id)] = (ciphertext, expires_at)

    async def get(self, tenant_id: str, job_id: str) -> bytes | None:
        item = self.items.get((tenant_id, job_id))
        if item is None or item[1] <= datetime.now(UTC):
            return None
        return item[0]

    async def read(self, tenant_id: str, job_id: str, offset: int, length: int) -> bytes | None:
        _check_range(offset, length)
        whole = await self.get(tenant_id, job_id)
        return None if whole is None else whole[offset : offset + length]

    async def delete(self, tenant_id: str, job_id: str) -> None:
        self.items.pop((tenant_id, job_id), None)

    async def purge_expired(self, now: datetime) -> int:
        dead = [k for k, (_, exp) in self.items.items() if exp <= now]
        for k in dead:
            del self.items[k]
        return len(dead)

    async def close(self) -> None:
        return None


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 1:
        raise ValueError("offset must be >= 0 and length >= 1")
