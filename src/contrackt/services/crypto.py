"""AES-256-GCM envelopes (one piece, or segmented streams): ciphertexts bound to tenant, job, purpose, key version."""

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
# A webhook's signing secret (the bytes behind whsec_…), sealed with the webhook id in the job slot.
PURPOSE_WEBHOOK_SECRET = "webhook_secret"  # noqa: S105 (a label in the associated data)


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


# --- Segmented streams: results are sealed in segments so they can be opened piece by piece. ---
#
# Layout: header | segment 0 | segment 1 | ... | segment n-1, each segment = AES-256-GCM(plaintext
# piece) + 16-byte tag. Every piece is ``segment_size`` bytes except the last (1..segment_size;
# an empty plaintext is one empty final segment). The key is derived per object from the tenant's
# data key, a random salt and the (tenant, job, purpose, version) associated data; the nonce is a
# random per-object prefix, the segment index and a final-segment flag. The associated data of a
# segment binds the object's identity, its header, the caller's context, the index and the flag:
# a segment opens only at its own position in its own object, and only the real last segment
# opens as the last one (truncation at a segment boundary is detected).

STREAM_MAGIC = b"CKS"
SEGMENT_SIZE = 64 * 1024
MAX_SEGMENT_SIZE = 1024 * 1024
TAG_SIZE = 16
_STREAM_HEADER = struct.Struct(">3sII16s7s")  # magic, key version, segment size, salt, nonce prefix
STREAM_HEADER_SIZE = _STREAM_HEADER.size
_MAX_SEGMENTS = 2**32  # the counter is 4 bytes of the nonce


def _segment_count(plaintext_length: int, segment_size: int) -> int:
    return max(1, -(-plaintext_length // segment_size))


def sealed_stream_length(plaintext_length: int, segment_size: int = SEGMENT_SIZE) -> int:
    """The exact size of the sealed stream of a plaintext this long (known before sealing)."""
    return STREAM_HEADER_SIZE + plaintext_length + TAG_SIZE * _segment_count(plaintext_length, segment_size)


def _stream_key(tenant_key: bytes, aad: bytes, salt: bytes) -> bytes:
    # A fresh key per object (random 128-bit salt): nonces only have to be unique inside one
    # object, which the segment counter guarantees.
    info = b"contrackt/stream/v1/" + aad
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(tenant_key)


def _segment_nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, final)


def _segment_aad(stream_aad: bytes, index: int, final: bool) -> bytes:
    return stream_aad + struct.pack(">IB", index, final)


def _stream_aad(aad: bytes, header: bytes, context: bytes) -> bytes:
    # Length-prefixed, so the concatenation is unambiguous.
    return struct.pack(">H", len(aad)) + aad + header + struct.pack(">I", len(context)) + context


def seal_stream(
    tenant_key: bytes,
    key_version: int,
    tenant_id: str,
    job_id: str,
    purpose: str,
    plaintext: bytes,
    *,
    context: bytes = b"",
    segment_size: int = SEGMENT_SIZE,
) -> bytes:
    """Seal ``plaintext`` as a segmented stream; ``context`` is authenticated with every segment."""
    if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError("segment size out of range")
    count = _segment_count(len(plaintext), segment_size)
    if count > _MAX_SEGMENTS:
        raise ValueError("plaintext too long for one stream")
    aad = associated_data(tenant_id, job_id, purpose, key_version)
    salt, prefix = os.urandom(16), os.urandom(7)
    header = _STREAM_HEADER.pack(STREAM_MAGIC, key_version, segment_size, salt, prefix)
    aead = AESGCM(_stream_key(tenant_key, aad, salt))
    stream_aad = _stream_aad(aad, header, context)
    out = bytearray(header)
    view = memoryview(plaintext)
    for index in range(count):
        final = index == count - 1
        piece = view[index * segment_size : (index + 1) * segment_size]
        out += aead.encrypt(_segment_nonce(prefix, index, final), piece, _segment_aad(stream_aad, index, final))
    return bytes(out)


class StreamOpener:
    """Opens one sealed stream segment by segment, given its header and its total length.

    The caller reads the ciphertext in whatever pieces it likes, but must hand each segment
    (``segment_span(i)``) to ``open(i, ...)``; it knows from the length which segment is the last.
    """

    def __init__(
        self,
        tenant_key: bytes,
        tenant_id: str,
        job_id: str,
        purpose: str,
        header: bytes,
        stream_length: int,
        *,
        context: bytes = b"",
    ) -> None:
        if len(header) < STREAM_HEADER_SIZE:
            raise DecryptionFailed("not a Contrackt stream")
        header = bytes(header[:STREAM_HEADER_SIZE])
        magic, version, segment_size, salt, prefix = _STREAM_HEADER.unpack(header)
        if magic != STREAM_MAGIC or not 1 <= segment_size <= MAX_SEGMENT_SIZE:
            raise DecryptionFailed("not a Contrackt stream")
        body = stream_length - STREAM_HEADER_SIZE
        full = segment_size + TAG_SIZE
        count = max(1, -(-body // full))
        last = body - (count - 1) * full
        # The writer never makes an empty last segment after a full one, nor a short tag.
        if body < TAG_SIZE or last < TAG_SIZE or (count > 1 and last == TAG_SIZE) or count > _MAX_SEGMENTS:
            raise DecryptionFailed("ciphertext does not belong here or was altered")
        self.key_version = int(version)
        self.segment_size = int(segment_size)
        self.segment_count = count
        self.plaintext_length = body - TAG_SIZE * count
        aad = associated_data(tenant_id, job_id, purpose, self.key_version)
        self._prefix = prefix
        self._aead = AESGCM(_stream_key(tenant_key, aad, salt))
        self._stream_aad = _stream_aad(aad, header, context)
        self._stream_length = stream_length

    def segment_span(self, index: int) -> tuple[int, int]:
        """Offset (from the start of the stream) and length of segment ``index``."""
        full = self.segment_size + TAG_SIZE
        start = STREAM_HEADER_SIZE + index * full
        return start, min(full, self._stream_length - start)

    def open(self, index: int, segment: bytes | memoryview) -> bytes:
        if not 0 <= index < self.segment_count:
            raise DecryptionFailed("ciphertext does not belong here or was altered")
        final = index == self.segment_count - 1
        try:
            return self._aead.decrypt(
                _segment_nonce(self._prefix, index, final), segment, _segment_aad(self._stream_aad, index, final)
            )
        except InvalidTag as exc:
            raise DecryptionFailed("ciphertext does not belong here or was altered") from exc


def stream_key_version(header: bytes) -> int:
    if len(header) < STREAM_HEADER_SIZE or header[:3] != STREAM_MAGIC:
        raise DecryptionFailed("not a Contrackt stream")
    return int(_STREAM_HEADER.unpack_from(header)[1])


def open_stream(
    tenant_key: bytes, tenant_id: str, job_id: str, purpose: str, blob: bytes, *, context: bytes = b""
) -> bytes:
    """A whole stream at once (small objects, tests, tools)."""
    opener = StreamOpener(tenant_key, tenant_id, job_id, purpose, blob, len(blob), context=context)
    parts = []
    for index in range(opener.segment_count):
        start, length = opener.segment_span(index)
        parts.append(opener.open(index, blob[start : start + length]))
    return b"".join(parts)
