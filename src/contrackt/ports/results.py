"""Port: encrypted results with an expiry, read whole or in bounded pieces."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class ResultStore(Protocol):
    async def put(self, tenant_id: str, job_id: str, ciphertext: bytes, expires_at: datetime) -> None: ...

    async def get(self, tenant_id: str, job_id: str) -> bytes | None:
        """The ciphertext, or None when missing or expired."""
        ...

    async def read(self, tenant_id: str, job_id: str, offset: int, length: int) -> bytes | None:
        """Up to ``length`` bytes of the ciphertext from ``offset`` (``b""`` past its end), without
        loading the rest; None when missing or expired. Each call is its own short transaction."""
        ...

    async def delete(self, tenant_id: str, job_id: str) -> None: ...

    async def purge_expired(self, now: datetime) -> int:
        """Delete what has expired; the number deleted (0 where the backend expires by itself)."""
        ...

    async def close(self) -> None: ...
