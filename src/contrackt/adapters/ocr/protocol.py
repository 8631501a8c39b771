"""The wire between the worker and its sandboxed OCR children: frames and their schema.

A child parses hostile PDFs, so everything it sends is treated as hostile too.
Nothing is ever unpickled: each message is a *frame* ::

    u32 header length | header: a UTF-8 JSON object | u32 blob length | blob

(big-endian lengths).  The parent reads frames incrementally with hard caps on
both lengths, so a child cannot make it buffer more than ``max_header`` bytes,
and then checks every reply against the schema below before any of it becomes
a domain object.  A reply that breaks the framing or the schema is a
``ProtocolViolation``; a well-formed page over the output caps is an
``OutputExceeded``.

Only the standard library is imported: the child imports this module before
its thread variables take effect.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

_LEN = struct.Struct(">I")
# The parent's documents are bounded by the upload cap; this only guards the child's reader.
MAX_REQUEST_BLOB = 1 << 31
# A page at the default caps (100,000 characters, each possibly its own OCR word with a box)
# encodes to about 12 MB; anything past this is not a page.
DEFAULT_MAX_REPLY = 32 * 1024 * 1024

SOURCES = ("text_layer", "ocr")
ROTATIONS = (0, 90, 180, 270)
ERROR_CODES = (
    "encrypted_pdf",
    "corrupt_pdf",
    "corrupt_image",
    "image_too_large",
    "too_many_pages",
    "resource_limit",
    "output_limit",
    "unknown_engine",
    "needs_engine",
    "needs_ocr",
    "internal_error",
)
ACTIVE_CONTENT = ("javascript", "launch_action", "embedded_files")


class ChildError(Exception):
    """A child's ``error`` reply: ``code`` one of :data:`ERROR_CODES`, ``message`` for logs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProtocolViolation(Exception):
    """The peer sent something outside the protocol (framing or schema)."""


class OutputExceeded(Exception):
    """A well-formed reply whose text is over the output caps."""


@dataclass(frozen=True)
class OutputCaps:
    max_page_chars: int = 100_000
    max_lines_per_page: int = 2_000
    max_text_chars: int = 5_000_000  # whole document
    max_lines: int = 200_000  # whole document


def encode(header: dict[str, Any], blob: bytes = b"") -> bytes:
    """One frame: header (JSON, no NaN/Infinity) and an optional binary blob.

    PDF text layers can hold unpaired UTF-16 surrogates (broken ToUnicode maps): pairs
    are joined and lone ones become U+FFFD, so every header is valid UTF-8."""
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        head = text.encode()
    except UnicodeEncodeError:
        head = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
    return b"".join((_LEN.pack(len(head)), head, _LEN.pack(len(blob)), blob))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_header(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolViolation(f"header is not JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise ProtocolViolation("header is not a JSON object")
    return value


class FrameReader:
    """Incremental frame decoder with caps (the parent's side of a child's pipe).

    A frame's head (lengths and header) is gathered until its blob length is known and
    checked; the blob then goes straight into a buffer of its size (:meth:`read_from` has the
    kernel write it there), so a model request of many megabytes is copied once on its way in."""

    def __init__(self, max_header: int = DEFAULT_MAX_REPLY, max_blob: int = 0) -> None:
        self.max_header = max_header
        self.max_blob = max_blob
        self._head = bytearray()
        self._header: dict[str, Any] = {}
        self._blob: bytearray | None = None  # the blob being filled, once its length is known
        self._have = 0
        self._frames: list[tuple[dict[str, Any], bytes]] = []

    def feed(self, data: bytes | memoryview) -> list[tuple[dict[str, Any], bytes]]:
        """Add bytes; return every frame now complete. Raises ProtocolViolation."""
        view = memoryview(data)
        while view:
            view = self._take_head(view) if self._blob is None else self._take_blob(view)
        out, self._frames = self._frames, []
        return out

    def read_from(self, fd: int) -> list[tuple[dict[str, Any], bytes]] | None:
        """Read what ``fd`` has (non-blocking: BlockingIOError when nothing) and return the frames
        now complete; None at end of file. Raises ProtocolViolation."""
        import os

        if self._blob is None:
            data = os.read(fd, 1 << 16)
            return self.feed(data) if data else None
        with memoryview(self._blob) as blob:
            got = os.readv(fd, [blob[self._have :]])
        if not got:
            return None
        self._have += got
        if self._have == len(self._blob):
            self._finish()
        out, self._frames = self._frames, []
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a frame."""
        return len(self._head) + self._have

    def _take_head(self, view: memoryview) -> memoryview:
        head = self._head
        if len(head) < 4:
            take = min(4 - len(head), len(view))
            head += view[:take]
            view = view[take:]
            if len(head) < 4:
                return view
        (hlen,) = _LEN.unpack_from(head, 0)
        if hlen > self.max_header:
            raise ProtocolViolation(f"reply of {hlen} bytes is over the {self.max_header}-byte cap")
        take = min(8 + hlen - len(head), len(view))
        head += view[:take]
        view = view[take:]
        if len(head) < 8 + hlen:
            return view
        (blen,) = _LEN.unpack_from(head, 4 + hlen)
        if blen > self.max_blob:
            raise ProtocolViolation(f"blob of {blen} bytes is over the {self.max_blob}-byte cap")
        self._header = decode_header(bytes(head[4 : 4 + hlen]))
        self._head = bytearray()
        self._blob, self._have = bytearray(blen), 0
        if not blen:
            self._finish()
        return view

    def _take_blob(self, view: memoryview) -> memoryview:
        assert self._blob is not None
        take = min(len(self._blob) - self._have, len(view))
        self._blob[self._have : self._have + take] = view[:take]
        self._have += take
        if self._have == len(self._blob):
            self._finish()
        return view[take:]

    def _finish(self) -> None:
        assert self._blob is not None
        self._frames.append((self._header, bytes(self._blob)))
        self._header, self._blob, self._have = {}, None, 0


def read_frame(fd: int, max_blob: int = MAX_REQUEST_BLOB) -> tuple[dict[str, Any], bytes] | None:
    """Blocking read of one frame from ``fd`` (the child's side); None at end of file."""
    import os

    def exactly(n: int) -> bytes | None:
        chunks = []
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    head = exactly(4)
    if head is None:
        return None
    raw = exactly(_LEN.unpack(head)[0])
    size = exactly(4) if raw is not None else None
    if raw is None or size is None:
        return None
    (blen,) = _LEN.unpack(size)
    if blen > max_blob:
        raise ProtocolViolation("blob over the cap")
    blob = exactly(blen) if blen else b""
    if blob is None:
        return None
    return decode_header(raw), blob


def write_all(fd: int, data: bytes) -> None:
    import os

    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# ----------------------------------------------------------------------------- schema


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolViolation(f"{what} is not an integer in [{lo}, {hi}]")
    return value


def _num(value: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        raise ProtocolViolation(f"{what} is not a finite number in range")
    return float(value)


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise ProtocolViolation(f"{what} is not a string")
    return value


def _keys(obj: Any, what: str, required: frozenset[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if type(obj) is not dict:
        raise ProtocolViolation(f"{what} is not an object")
    keys = obj.keys()
    if not required <= keys or not keys <= required | optional:
        raise ProtocolViolation(f"{what} has unexpected or missing fields")
    return obj


def _bbox(value: Any, what: str) -> list[float]:
    if type(value) is not list or len(value) != 4:
        raise ProtocolViolation(f"{what} is not four numbers")
    return [_num(v, what) for v in value]


_PAGE = frozenset({"number", "source", "zoom", "rotation", "confidence", "text", "lines"})
_LINE = frozenset({"text", "confidence", "bbox"})
_WORD = frozenset({"text", "confidence", "bbox"})


def check_page(reply: Any, index: int, caps: OutputCaps) -> dict[str, Any]:
    """The page dict of a child's reply, checked field by field; raises ProtocolViolation or
    OutputExceeded. Returns the same object (now known to be well-formed)."""
    page = _keys(reply, "page", _PAGE)
    if _int(page["number"], "page number", 1, 1 << 31) != index + 1:
        raise ProtocolViolation("reply for another page")
    if page["source"] not in SOURCES:
        raise ProtocolViolation("unknown page source")
    if page["zoom"] is not None:
        _num(page["zoom"], "zoom", 0.0, 1000.0)
    if page["rotation"] not in ROTATIONS or type(page["rotation"]) is not int:
        raise ProtocolViolation("rotation is not 0/90/180/270")
    _num(page["confidence"], "confidence", 0.0, 1.0)
    text = _str(page["text"], "page text")
    lines = page["lines"]
    if type(lines) is not list:
        raise ProtocolViolation("lines is not a list")
    if len(lines) > caps.max_lines_per_page:
        raise OutputExceeded(f"a page has more than {caps.max_lines_per_page} lines")
    if len(text) > caps.max_page_chars:
        raise OutputExceeded(f"a page has more than {caps.max_page_chars} characters")
    chars = 0
    for line in lines:
        line = _keys(line, "line", _LINE, frozenset({"words"}))
        chars += len(_str(line["text"], "line text"))
        _num(line["confidence"], "line confidence", 0.0, 1.0)
        _bbox(line["bbox"], "line box")
        words = line.get("words")
        if words is not None:
            if type(words) is not list or len(words) > caps.max_page_chars:
                raise ProtocolViolation("words is not a list of words")
            for word in words:
                word = _keys(word, "word", _WORD)
                _str(word["text"], "word text")
                _num(word["confidence"], "word confidence", 0.0, 1.0)
                _bbox(word["bbox"], "word box")
    if chars > caps.max_page_chars:
        raise OutputExceeded(f"a page has more than {caps.max_page_chars} characters")
    return page


def check_opened(reply: dict[str, Any], max_pages: int) -> tuple[int, bool, tuple[str, ...]]:
    """(pages, encrypted, active content) of an ``opened`` reply."""
    reply = _keys(reply, "opened reply", frozenset({"op", "id", "pages", "encrypted", "active_content"}))
    pages = _int(reply["pages"], "page count", 0, 1 << 31)
    if type(reply["encrypted"]) is not bool:
        raise ProtocolViolation("encrypted is not a boolean")
    found = reply["active_content"]
    if type(found) is not list or any(item not in ACTIVE_CONTENT for item in found) or len(found) > 3:
        raise ProtocolViolation("unknown active content")
    del max_pages  # the caller decides what too many pages means
    return pages, reply["encrypted"], tuple(found)


def check_error(reply: dict[str, Any]) -> tuple[str, str]:
    """(code, message) of an ``error`` reply; the message is for logs only and truncated."""
    reply = _keys(reply, "error reply", frozenset({"op", "id", "code", "message"}))
    code = _str(reply["code"], "error code")
    if code not in ERROR_CODES:
        raise ProtocolViolation("unknown error code")
    return code, _str(reply["message"], "error message")[:200]


# The searchable PDF (the only reply that carries a blob): the document's own bytes (a saved copy
# may grow: object streams written out, images re-encoded), its text layer (each character
# written as four hex digits plus per-word operators, then compressed) and per-page structure.
SEARCHABLE_INPUT_FACTOR = 3
SEARCHABLE_BASE = 2 * 1024 * 1024
SEARCHABLE_PER_PAGE = 8 * 1024
SEARCHABLE_PER_CHAR = 16
SEARCHABLE_PER_WORD = 96


def searchable_cap(document_bytes: int, pages: list[dict[str, Any]]) -> int:
    """The most bytes a child may send for the searchable PDF of these (validated) pages."""
    chars = words = 0
    for page in pages:
        for line in page["lines"]:
            chars += len(line["text"])
            words += len(line.get("words") or ()) + 1
    return (
        SEARCHABLE_BASE
        + SEARCHABLE_INPUT_FACTOR * document_bytes
        + SEARCHABLE_PER_PAGE * len(pages)
        + SEARCHABLE_PER_CHAR * chars
        + SEARCHABLE_PER_WORD * words
    )


def check_searchable(reply: dict[str, Any], blob: bytes) -> bytes:
    """The PDF of a ``searchable`` reply: exact keys, a non-empty blob that starts like a PDF.
    The length was capped by the reader before the blob was read; the bytes are otherwise
    opaque tenant data (never parsed here)."""
    _keys(reply, "searchable reply", frozenset({"op", "id"}))
    if not blob.startswith(b"%PDF-"):
        raise ProtocolViolation("the searchable PDF does not start like a PDF")
    return blob
