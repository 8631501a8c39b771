"""The stored result: one object holding the JSON and the plain text, each a sealed segmented stream.

Layout: header | JSON stream | text stream. The header (magic ``CKR``, format 1, the two streams'
lengths and the result's SHA-256) is authenticated as context by every segment of both streams,
so a changed length or digest fails the first segment read. One object, not two: the two parts
are written, expire and are deleted together by every store. A legacy result (one AES-GCM piece
of the JSON, magic ``CK1``) is recognised by its first bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from contrackt.domain.errors import DecryptionFailed
from contrackt.services.crypto import MAGIC as LEGACY_MAGIC
from contrackt.services.crypto import (
    PURPOSE_RESULT,
    SEGMENT_SIZE,
    STREAM_HEADER_SIZE,
    StreamOpener,
    key_version_of,
    open_stream,
    seal_stream,
    sealed_stream_length,
    stream_key_version,
)

Part = Literal["json", "text"]

RESULT_MAGIC = b"CKR"
RESULT_FORMAT = 1
_HEADER = struct.Struct(">3sBQQ32s")  # magic, format, JSON stream length, text stream length, SHA-256
HEADER_SIZE = _HEADER.size
PURPOSE_RESULT_TEXT = "result-text"
PURPOSES: dict[Part, str] = {"json": PURPOSE_RESULT, "text": PURPOSE_RESULT_TEXT}


def is_legacy(head: bytes) -> bool:
    """A result sealed in one piece before results were streamed."""
    return head[:3] == LEGACY_MAGIC


@dataclass(frozen=True)
class ResultHeader:
    raw: bytes
    json_length: int
    text_length: int
    result_sha256: str

    @classmethod
    def parse(cls, head: bytes) -> ResultHeader:
        if len(head) < HEADER_SIZE:
            raise DecryptionFailed("not a Contrackt result")
        raw = bytes(head[:HEADER_SIZE])
        magic, fmt, json_length, text_length, digest = _HEADER.unpack(raw)
        if magic != RESULT_MAGIC or fmt != RESULT_FORMAT:
            raise DecryptionFailed("not a Contrackt result")
        return cls(raw, int(json_length), int(text_length), bytes(digest).hex())

    def span(self, part: Part) -> tuple[int, int]:
        """Offset and length of one part's stream inside the object."""
        if part == "json":
            return HEADER_SIZE, self.json_length
        return HEADER_SIZE + self.json_length, self.text_length


def seal_result(
    tenant_key: bytes,
    key_version: int,
    tenant_id: str,
    job_id: str,
    result_json: bytes,
    text: bytes,
    result_sha256: str,
    *,
    segment_size: int = SEGMENT_SIZE,
) -> bytes:
    """The stored object for one job's result."""
    header = _HEADER.pack(
        RESULT_MAGIC,
        RESULT_FORMAT,
        sealed_stream_length(len(result_json), segment_size),
        sealed_stream_length(len(text), segment_size),
        bytes.fromhex(result_sha256),
    )
    streams = [
        seal_stream(
            tenant_key,
            key_version,
            tenant_id,
            job_id,
            PURPOSES[part],
            plaintext,
            context=header,
            segment_size=segment_size,
        )
        for part, plaintext in _parts(result_json, text)
    ]
    return header + b"".join(streams)


def _parts(result_json: bytes, text: bytes) -> tuple[tuple[Part, bytes], ...]:
    return (("json", result_json), ("text", text))


def result_key_version(blob: bytes) -> int:
    """The data-key version an object was sealed with (either format)."""
    if is_legacy(blob):
        return key_version_of(blob)
    header = ResultHeader.parse(blob)
    offset, _ = header.span("json")
    return stream_key_version(blob[offset : offset + STREAM_HEADER_SIZE])


def part_opener(
    tenant_key: bytes, tenant_id: str, job_id: str, header: ResultHeader, part: Part, stream_head: bytes
) -> StreamOpener:
    """An opener for one part, given the first bytes of its stream."""
    _, length = header.span(part)
    return StreamOpener(tenant_key, tenant_id, job_id, PURPOSES[part], stream_head, length, context=header.raw)


def open_result_part(tenant_key: bytes, tenant_id: str, job_id: str, blob: bytes, part: Part) -> bytes:
    """One part of a whole object at once (tests and tools; the API streams)."""
    header = ResultHeader.parse(blob)
    offset, length = header.span(part)
    stream = blob[offset : offset + length]
    if len(stream) != length:
        raise DecryptionFailed("ciphertext does not belong here or was altered")
    return open_stream(tenant_key, tenant_id, job_id, PURPOSES[part], stream, context=header.raw)
