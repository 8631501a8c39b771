"""Port: the key that signs deletion receipts, one per deployment (database-kept or a mounted secret)."""

from __future__ import annotations

from typing import Protocol


class ReceiptSigner(Protocol):
    """Signs receipt bytes with Ed25519. Key material never leaves the adapter.

    Every process of a deployment must sign with the same key (receipts are verified
    against one published public key), so an adapter loads a shared key; none makes a
    key of its own per process.
    """

    algorithm: str  # "Ed25519"

    async def public_key_raw(self) -> bytes:
        """The 32-byte raw Ed25519 public key."""
        ...

    async def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        ...
