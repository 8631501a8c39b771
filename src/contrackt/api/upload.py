"""Reading an upload without trusting it: caps on size and parts as bytes arrive, the
whole body within a deadline, multipart parsed off the event loop, no temp files.

Starlette's form parser spools large files to a temporary directory in clear
text; a document must never rest unencrypted, so multipart is parsed here, in
memory.  The multipart parser is pure Python and costs about 3 s of CPU for a
50 MB body of empty parts, so it never runs on the event loop: the loop only
gathers bytes, and batches of about 1 MiB are parsed in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from contrackt.domain.errors import (
    BodyTimeout,
    ContracktError,
    EmptyUpload,
    InvalidRequest,
    NotAPdf,
    TooManyParts,
    UploadTooLarge,
)

MULTIPART_OVERHEAD = 64 * 1024
BATCH_BYTES = 1024 * 1024  # bytes handed to the parser thread at once
PARSER_THREADS = 1  # pure Python holds the GIL: more threads would not parse faster, only contend with the loop
# raw bodies: the document's own type (the first bytes decide what it is), or none in particular
RAW_TYPES = ("application/pdf", "image/jpeg", "image/png", "image/tiff", "application/octet-stream", "")


# A refusal answered before the body was read: small bodies are read and dropped first (see
# discard_small_body), larger ones are not read at all.
DISCARD_MAX_BYTES = 1024 * 1024
DISCARD_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int  # the document (CONTRACKT_MAX_UPLOAD_MB)
    max_parts: int  # parts of a multipart body (CONTRACKT_MAX_MULTIPART_PARTS)
    timeout_s: float  # the whole body (CONTRACKT_BODY_TIMEOUT_SECONDS)


def _too_large(cap: int) -> UploadTooLarge:
    return UploadTooLarge(f"The upload is larger than {cap // (1024 * 1024)} MB")


def check_declared_length(content_length: str | None, cap: int) -> None:
    """Refuse at once (before reading a byte) when the declared size is over the cap."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise InvalidRequest("Content-Length is not a number") from None
    if declared > cap + MULTIPART_OVERHEAD:
        raise _too_large(cap)


@contextmanager
def closing_on_error() -> Iterator[None]:
    """A refused upload ends its connection (``Connection: close``): a body left unread is
    never read, and the client cannot keep the connection open to trickle it."""
    try:
        yield
    except ContracktError as exc:
        headers = dict(getattr(exc, "headers", None) or {})
        headers["Connection"] = "close"
        exc.headers = headers  # type: ignore[attr-defined]
        raise


async def discard_small_body(receive: Receive, content_length: str | None) -> None:
    """Read and drop a small body that a refusal leaves unread, so that the refusal reaches the client.

    A refused upload closes its connection; a socket closed with unread bytes is *reset* by the
    kernel, and the reset can destroy the answer before the client reads it (no status, no
    ``Retry-After``: found by ``bench.load`` with 64 clients, and by
    ``tests/unit/test_edge_refusals.py``). A body declared at most ``DISCARD_MAX_BYTES`` is read and
    dropped for at most ``DISCARD_TIMEOUT_S``; a larger or undeclared one is not read — not reading
    it is the point of refusing early.
    """
    try:
        declared = int(content_length) if content_length is not None else None
    except ValueError:
        return
    if declared is None or declared <= 0 or declared > DISCARD_MAX_BYTES:
        return
    seen = 0
    try:
        async with asyncio.timeout(DISCARD_TIMEOUT_S):
            while seen <= declared:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left
                seen += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except (TimeoutError, ClientDisconnect):
        return


async def read_body(stream: AsyncIterator[bytes], content_type: str, limits: BodyLimits) -> bytes:
    """The document in a request body: the multipart field ``file``, or the raw body.

    The whole body must arrive within ``limits.timeout_s`` (else ``BodyTimeout``, 408).
    """
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and content_type.split(";")[0].strip() not in RAW_TYPES:
        raise NotAPdf(
            "Send multipart/form-data with a 'file' field, or the document as the body "
            "(application/pdf, image/jpeg, image/png or image/tiff)"
        )
    try:
        async with asyncio.timeout(limits.timeout_s):
            if multipart:
                return await read_multipart_file(stream, content_type, limits.max_bytes, max_parts=limits.max_parts)
            return await read_raw(stream, limits.max_bytes)
    except TimeoutError:
        raise BodyTimeout(f"The whole request body must arrive within {limits.timeout_s:g} s") from None
    except ClientDisconnect:
        # Nobody is left to read the answer; a problem (not a stack trace) is what the log gets.
        raise InvalidRequest("The connection closed before the whole body arrived") from None


async def read_raw(stream: AsyncIterator[bytes], cap: int) -> bytes:
    buf = bytearray()
    async for chunk in stream:
        buf += chunk
        if len(buf) > cap:
            raise _too_large(cap)
    return bytes(buf)


async def read_multipart_file(
    stream: AsyncIterator[bytes], content_type: str, cap: int, *, max_parts: int, field: str = "file"
) -> bytes:
    """The bytes of the multipart part named ``field``; other parts are ignored (but counted)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart body without a boundary")

    part = _PartState(field.encode(), cap, max_parts)
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
    batch: list[bytes] = []
    batched = 0
    async for chunk in stream:
        total += len(chunk)
        if total > cap + MULTIPART_OVERHEAD:
            raise _too_large(cap)
        batch.append(chunk)
        batched += len(chunk)
        if batched >= BATCH_BYTES:
            await _parse(parser, b"".join(batch))
            batch, batched = [], 0
    if batch:
        await _parse(parser, b"".join(batch))
    try:
        parser.finalize()  # checks the closing boundary; no data left to parse
    except Exception as exc:
        raise InvalidRequest("malformed multipart body") from exc
    if part.found is None:
        raise EmptyUpload("multipart body has no 'file' field")
    return bytes(part.found)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _parser_pool() -> ThreadPoolExecutor:
    """The parser threads, started on the first multipart upload (not at import)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=PARSER_THREADS, thread_name_prefix="contrackt-multipart")
        return _pool


async def _parse(parser: MultipartParser, data: bytes) -> None:
    """Feed ``data`` to the parser in a worker thread.  If the request is abandoned meanwhile
    (body timeout, client gone), the thread finishes this batch and its state is dropped."""
    try:
        await asyncio.get_running_loop().run_in_executor(_parser_pool(), parser.write, data)
    except ContracktError:
        raise
    except Exception as exc:  # the multipart parser's own errors
        raise InvalidRequest("malformed multipart body") from exc


class _PartState:
    """Callbacks for the streaming multipart parser; keeps only the wanted part, counts them all."""

    def __init__(self, field: bytes, cap: int, max_parts: int) -> None:
        self.field = field
        self.cap = cap
        self.max_parts = max_parts
        self.parts = 0
        self.headers: dict[bytes, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.found: bytearray | None = None
        self.current: bytearray | None = None

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise TooManyParts(f"A multipart body may hold at most {self.max_parts} parts")
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
                raise _too_large(self.cap)
