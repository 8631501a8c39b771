"""AES-256-GCM envelope: ciphertexts bound to tenant, job, purpose and key version."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contrackt.domain.errors import DecryptionFailed

MAGIC = b"CK1"
_HEADER = struct.Struct(">3sI12s")  # magic, key version, nonce

PURPOSE_DOCUMENT = "document"
PURPOSE_RESULT = "result"
# The document's plain SHA-256 (32 bytes), kept only sealed: the tenant may read it back, nobody else.
PURPOSE_DIGEST = "digest"


def associated_data(tenant_id: str, job_id: str, purpose: str, key_version: int) -> bytes:
    """``tenant|job|purpose|version``. A part holding ``|`` is refused: the encoding must be
    injective, or ("a|b", "c") and ("a", "b|c") would share associated data (and object key)."""
    for part in (tenant_id, job_id, purpose):
        if "|" in part:
            raise ValueError("tenant, job and purpose must not contain '|'")
    return f"{tenant_id}|{job_id}|{purpose}|{key_version}".encode()


def _object_key(tenant_key: bytes, aad: bytes) -> bytes:
    # One derived key per (tenant, job, purpose, version): a nonce never repeats under a key
    # even if the random generator were to repeat across objects.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"contrackt/object/" + aad).derive(tenant_key)


def seal(tenant_key: bytes, key_version: int, tenant_id: str, job_id: str, purpose: str, plaintext: bytes) -> bytes:
    aad = associated_data(tenant_id, job_id, purpose, key_version)
    nonce = os.urandom(12)
    ct = AESGCM(_object_key(tenant_key, aad)).encrypt(nonce, plaintext, aad)
    return _HEADER.pack(MAGIC, key_version, nonce) + ct


def key_version_of(blob: bytes) -> int:
    if len(blob) < _HEADER.size or blob[:3] != MAGIC:
        raise DecryptionFailed("not a Contrackt ciphertext")
    return int(_HEADER.unpack_from(blob)[1])


def open_sealed(tenant_key: bytes, tenant_id: str, job_id: str, purpose: str, blob: bytes) -> bytes:
    version = key_version_of(blob)
    _, _, nonce = _HEADER.unpack_from(blob)
    aad = associated_data(tenant_id, job_id, purpose, version)
    try:
        return AESGCM(_object_key(tenant_key, aad)).decrypt(nonce, blob[_HEADER.size :], aad)
    except InvalidTag as exc:
        raise DecryptionFailed("ciphertext does not belong here or was altered") from exc


def fingerprint(fingerprint_key: bytes, document: bytes) -> str:
    """Keyed fingerprint (HMAC-SHA256) stored instead of the plain SHA-256."""
    return hmac.new(fingerprint_key, document, hashlib.sha256).hexdigest()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
