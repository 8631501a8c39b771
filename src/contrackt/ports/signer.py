"""Port: the key that signs deletion receipts (local Ed25519 file; a KMS asymmetric key fits too)."""

from __future__ import annotations

from typing import Protocol


class ReceiptSigner(Protocol):
    """Signs receipt bytes with Ed25519. Key material never leaves the adapter."""

    algorithm: str  # "Ed25519"

    def public_key_raw(self) -> bytes:
        """The 32-byte raw Ed25519 public key."""
        ...

    async def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        ...
