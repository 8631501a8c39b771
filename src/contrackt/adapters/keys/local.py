"""Local master key file (embedded mode): 32 random bytes, mode 0600, wraps tenant keys with AES-GCM."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contrackt.domain.errors import KeyUnavailable


def load_or_create_master_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"master key file {path} must be mode 0600, is {oct(mode)}") from None
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"master key file {path} is damaged (expected 32 bytes)") from None
        return key
    key = AESGCM.generate_key(bit_length=256)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


class LocalKeyProvider:
    name = "local"

    def __init__(self, path: Path) -> None:
        self._aead = AESGCM(load_or_create_master_key(path))

    async def wrap(self, plaintext_key: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext_key, context.encode())

    async def unwrap(self, wrapped: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:12], wrapped[12:], context.encode())
        except InvalidTag as exc:
            raise KeyUnavailable("a wrapped key failed to unwrap under the master key") from exc

    async def close(self) -> None:
        return None
