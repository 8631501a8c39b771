"""Ed25519 receipt signing: a loaded private key behind the ReceiptSigner port, and PEM reading.

The adapters differ only in where the key comes from (``receipt_db``: the database, wrapped by
the key provider; ``receipt_file``: a mounted secret). None of them ever writes a key file.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = "Ed25519"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def read_signing_key(path: Path, *, forbidden_mode: int = 0o077) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PKCS#8 PEM file; never creates anything.

    ``forbidden_mode``: permission bits the file must not have (a key others may read is refused).
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & forbidden_mode:
        raise PermissionError(
            f"receipt signing key {path} is mode {oct(mode)}; it must not have {oct(forbidden_mode)} bits"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"receipt signing key {path} is not an Ed25519 key")
    return key


class Ed25519Signer:
    """Signs with a key loaded once per process (``_load``, run at most once at a time)."""

    algorithm = ALGORITHM

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key
        self._lock = asyncio.Lock()

    async def _load(self) -> Ed25519PrivateKey:
        raise NotImplementedError("an Ed25519Signer without a key must say where to load it from")

    async def _private(self) -> Ed25519PrivateKey:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._load()
        return self._key

    async def public_key_raw(self) -> bytes:
        return raw_public(await self._private())

    async def sign(self, message: bytes) -> bytes:
        return (await self._private()).sign(message)
