"""The stored result: one object holding every form of one job's result, each a sealed segmented stream.

Layout (format 2): header | JSON stream | text stream | markdown stream | searchable PDF stream. The
header (magic ``CKR``, format, the four streams' lengths and the result's SHA-256) is authenticated
as context by every segment of every stream, so a changed length or digest fails the first segment
read. A part of length 0 is absent (a result without a searchable PDF). One object, not several:
the parts are written, expire and are deleted together by every store, so the searchable PDF lives
exactly as long as the JSON. Format 1 (JSON and text only) is still read; a legacy result (one
AES-GCM piece of the JSON, magic ``CK1``) is recognised by its first bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from contrackt.domain.errors import DecryptionFailed, FormatUnavailable
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

Part = Literal["json", "text", "markdown", "pdf"]
PARTS: tuple[Part, ...] = ("json", "text", "markdown", "pdf")

RESULT_MAGIC = b"CKR"
RESULT_FORMAT = 2
# magic, format, then per part its stream length, then the result's SHA-256
_HEADERS = {
    1: (struct.Struct(">3sBQQ32s"), PARTS[:2]),
    2: (struct.Struct(">3sBQQQQ32s"), PARTS),
}
HEADER_SIZE = _HEADERS[RESULT_FORMAT][0].size
MAX_HEADER_SIZE = max(layout.size for layout, _ in _HEADERS.values())
PURPOSE_RESULT_TEXT = "result-text"
PURPOSES: dict[Part, str] = {
    "json": PURPOSE_RESULT,
    "text": PURPOSE_RESULT_TEXT,
    "markdown": "result-markdown",
    "pdf": "result-pdf",
}


def is_legacy(head: bytes) -> bool:
    """A result sealed in one piece before results were streamed."""
    return head[:3] == LEGACY_MAGIC


@dataclass(frozen=True)
class ResultHeader:
    raw: bytes
    lengths: dict[Part, int]  # sealed stream length of each part (0: absent)
    result_sha256: str

    @classmethod
    def parse(cls, head: bytes) -> ResultHeader:
        if len(head) < 4 or head[:3] != RESULT_MAGIC or head[3] not in _HEADERS:
            raise DecryptionFailed("not a Contrackt result")
        layout, parts = _HEADERS[head[3]]
        if len(head) < layout.size:
            raise DecryptionFailed("not a Contrackt result")
        raw = bytes(head[: layout.size])
        _magic, _fmt, *lengths, digest = layout.unpack(raw)
        return cls(raw, {part: int(n) for part, n in zip(parts, lengths, strict=True)}, bytes(digest).hex())

    @property
    def json_length(self) -> int:
        return self.lengths["json"]

    @property
    def text_length(self) -> int:
        return self.lengths["text"]

    def has(self, part: Part) -> bool:
        return self.lengths.get(part, 0) > 0

    def span(self, part: Part) -> tuple[int, int]:
        """Offset and length of one part's stream inside the object."""
        offset = len(self.raw)
        for name, length in self.lengths.items():
            if name == part:
                return offset, length
            offset += length
        return offset, 0


def seal_result(
    tenant_key: bytes,
    key_version: int,
    tenant_id: str,
    job_id: str,
    result_json: bytes,
    text: bytes,
    result_sha256: str,
    *,
    markdown: bytes | None = None,
    pdf: bytes | None = None,
    segment_size: int = SEGMENT_SIZE,
) -> bytes:
    """The stored object for one job's result (``markdown`` / ``pdf`` None: that part is absent)."""
    plaintexts: dict[Part, bytes | None] = {"json": result_json, "text": text, "markdown": markdown, "pdf": pdf}
    layout, parts = _HEADERS[RESULT_FORMAT]
    header = layout.pack(
        RESULT_MAGIC,
        RESULT_FORMAT,
        *(0 if (p := plaintexts[part]) is None else sealed_stream_length(len(p), segment_size) for part in parts),
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
        for part in parts
        if (plaintext := plaintexts[part]) is not None
    ]
    return header + b"".join(streams)


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
    if not length:
        raise FormatUnavailable(f"This result has no {part} part")
    stream = blob[offset : offset + length]
    if len(stream) != length:
        raise DecryptionFailed("ciphertext does not belong here or was altered")
    return open_stream(tenant_key, tenant_id, job_id, PURPOSES[part], stream, context=header.raw)
