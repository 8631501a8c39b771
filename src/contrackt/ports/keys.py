"""Port: the master key that wraps each tenant's keys (local file, KMS, Vault)."""

from __future__ import annotations

from typing import Protocol


class KeyProvider(Protocol):
    name: str

    async def wrap(self, plaintext_key: bytes, context: str) -> bytes:
        """Encrypt a data key under the master key; ``context`` is bound as associated data."""
        ...

    async def unwrap(self, wrapped: bytes, context: str) -> bytes: ...

    async def close(self) -> None: ...
