"""Local master key file (embedded mode): 32 random bytes, mode 0600, wraps tenant keys with AES-GCM."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contrackt.domain.errors import KeyUnavailable


def _read_master_key(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"master key file {path} must be mode 0600, is {oct(mode)}")
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"master key file {path} is damaged (expected 32 bytes)")
    return key


def load_or_create_master_key(path: Path) -> bytes:
    """Read the master key, creating it first if missing.

    Creation is race-free between processes starting together: the key is written to a
    private temporary file and hard-linked into place, so nobody reads a half-written key
    and every process ends up with the one that was linked first.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, AESGCM.generate_key(bit_length=256))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process linked its key first: everybody uses that one
        finally:
            tmp.unlink(missing_ok=True)
    return _read_master_key(path)


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
