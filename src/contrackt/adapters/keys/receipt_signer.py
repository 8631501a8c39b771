"""Local Ed25519 receipt-signing key: ``{CONTRACKT_HOME}/receipt_signing.key``, PKCS#8 PEM, mode 0600.

The file is created on first use. Creation is race-free between processes: the key is
written to a private temporary file and hard-linked into place, so a reader never sees
a half-written key and two processes starting together end up with the same key.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

RECEIPT_KEY_FILE = "receipt_signing.key"


def _read_key(path: Path) -> Ed25519PrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"receipt signing key {path} must be mode 0600, is {oct(mode)}")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"receipt signing key {path} is not an Ed25519 key")
    return key


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _read_key(path)  # another process won the race: use its key
    finally:
        tmp.unlink(missing_ok=True)
    return key


def load_public_key(path: Path) -> bytes | None:
    """The raw public key of an existing signing key file (never creates one); None if absent."""
    if not path.exists():
        return None
    return _read_key(path).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class LocalReceiptSigner:
    algorithm = "Ed25519"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: Ed25519PrivateKey | None = None
        self._lock = threading.Lock()

    def _private(self) -> Ed25519PrivateKey:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = load_or_create_signing_key(self.path)
        return self._key

    def public_key_raw(self) -> bytes:
        return self._private().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    async def sign(self, message: bytes) -> bytes:
        return self._private().sign(message)
