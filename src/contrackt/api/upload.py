"""Reading an upload without trusting it: size cap while streaming, no temp files.

Starlette's form parser spools large files to a temporary directory in clear
text; a document must never rest unencrypted, so multipart is parsed here,
in memory, with the cap enforced as bytes arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from contrackt.domain.errors import EmptyUpload, InvalidRequest, UploadTooLarge

MULTIPART_OVERHEAD = 64 * 1024


def check_declared_length(content_length: str | None, cap: int) -> None:
    """Refuse at once (before reading a byte) when the declared size is over the cap."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise InvalidRequest("Content-Length is not a number") from None
    if declared > cap + MULTIPART_OVERHEAD:
        raise UploadTooLarge(f"The upload is larger than {cap // (1024 * 1024)} MB")


async def read_raw(stream: AsyncIterator[bytes], cap: int) -> bytes:
    buf = bytearray()
    async for chunk in stream:
        buf += chunk
        if len(buf) > cap:
            raise UploadTooLarge(f"The upload is larger than {cap // (1024 * 1024)} MB")
    return bytes(buf)


async def read_multipart_file(stream: AsyncIterator[bytes], content_type: str, cap: int, field: str = "file") -> bytes:
    """The bytes of the multipart part named ``field``; other parts are ignored."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart body without a boundary")

    part = _PartState(field.encode(), cap)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": part.on_part_begin,
            "on_header_field": part.on_header_field,
            "on_header_value": part.on_header_value,
            "on_header_end": part.on_header_end,
            "on_headers_finished": part.on_headers_finished,
            "on_part_data": part.on_part_data,
        },
    )
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > cap + MULTIPART_OVERHEAD:
            raise UploadTooLarge(f"The upload is larger than {cap // (1024 * 1024)} MB")
        try:
            parser.write(chunk)
        except UploadTooLarge:
            raise
        except Exception as exc:  # the multipart parser's own errors
            raise InvalidRequest("malformed multipart body") from exc
    try:
        parser.finalize()
    except Exception as exc:
        raise InvalidRequest("malformed multipart body") from exc
    if part.found is None:
        raise EmptyUpload("multipart body has no 'file' field")
    return bytes(part.found)


class _PartState:
    """Callbacks for the streaming multipart parser; keeps only the wanted part."""

    def __init__(self, field: bytes, cap: int) -> None:
        self.field = field
        self.cap = cap
        self.headers: dict[bytes, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.found: bytearray | None = None
        self.current: bytearray | None = None

    def on_part_begin(self) -> None:
        self.headers = {}
        self.current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        _, disp = parse_options_header(self.headers.get(b"content-disposition", b""))
        if disp.get(b"name") == self.field and self.found is None:
            self.found = self.current = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current is not None:
            self.current += data[start:end]
            if len(self.current) > self.cap:
                raise UploadTooLarge(f"The upload is larger than {self.cap // (1024 * 1024)} MB")
