"""Counts the master key's failures around any KeyProvider (contrackt_key_provider_failures_total).

A KMS or Vault that refuses or times out shows first as failed jobs and 5xx answers; this
counter names the cause, and the alert rules watch it (docs/adr/0012-observability.md).
"""

from __future__ import annotations

from contrackt.metrics import KEY_PROVIDER_FAILURES
from contrackt.ports.keys import KeyProvider


class MeasuredKeyProvider:
    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.name = inner.name

    async def wrap(self, plaintext_key: bytes, context: str) -> bytes:
        try:
            return await self.inner.wrap(plaintext_key, context)
        except Exception:
            KEY_PROVIDER_FAILURES.labels(self.name, "wrap").inc()
            raise

    async def unwrap(self, wrapped: bytes, context: str) -> bytes:
        try:
            return await self.inner.unwrap(wrapped, context)
        except Exception:
            KEY_PROVIDER_FAILURES.labels(self.name, "unwrap").inc()
            raise

    async def close(self) -> None:
        await self.inner.close()
