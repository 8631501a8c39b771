"""Writing small PDFs by hand: invisible text layers and pages that wrap images.

Runs inside an OCR child (``searchable.py``). A text layer is one content
stream per page, drawn in render mode 3 with the glyphless font
(``glyphless.py``): each OCR word is written at its box, its font size the
box's height and its horizontal scaling (``Tz``) stretching it to the box's
width, so a viewer's selection follows the printed words. Character codes are
Unicode code points (Identity-H, two bytes) mapped back by a ``ToUnicode``
CMap; characters outside the BMP are written as U+FFFD.

Only the standard library.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from contrackt.adapters.ocr.glyphless import ADVANCE, FONT_NAME, UNITS_PER_EM, glyphless_font

BBox = tuple[float, float, float, float]
FONT_RESOURCE = b"CtkGlyphless"


def _num(value: float) -> bytes:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return (text if text not in ("", "-0") else "0").encode()


def pdf_name(value: bytes) -> bytes:
    return b"/" + value


class PdfWriter:
    """Objects numbered from 1, a classic cross-reference table, one trailer."""

    def __init__(self) -> None:
        self._objects: list[bytes | None] = []

    def reserve(self) -> int:
        self._objects.append(None)
        return len(self._objects)

    def set(self, number: int, body: bytes) -> None:
        self._objects[number - 1] = body

    def add(self, body: bytes) -> int:
        self._objects.append(body)
        return len(self._objects)

    def add_stream(self, entries: bytes, data: bytes, *, compress: bool = True) -> int:
        if compress:
            data = zlib.compress(data, 6)
            entries += b" /Filter /FlateDecode"
        return self.add(b"<< " + entries + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")

    def size_of(self, number: int) -> int:
        body = self._objects[number - 1]
        return len(body) if body is not None else 0

    def finish(self, root: int) -> bytes:
        out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(self._objects, start=1):
            if body is None:
                raise ValueError(f"object {number} was reserved but never written")
            offsets.append(len(out))
            out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
        out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
        out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(offsets) + 1, root, xref)
        return bytes(out)


def _to_unicode_cmap() -> bytes:
    ranges = [b"<%02X00> <%02XFF> <%02X00>" % (hi, hi, hi) for hi in range(256) if not 0xD8 <= hi <= 0xDF]
    blocks = []
    for start in range(0, len(ranges), 100):
        chunk = ranges[start : start + 100]
        blocks.append(b"%d beginbfrange\n" % len(chunk) + b"\n".join(chunk) + b"\nendbfrange")
    return (
        b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        b"/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        b"1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        + b"\n".join(blocks)
        + b"\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    )


def add_glyphless_font(writer: PdfWriter) -> int:
    """The Type0 font object (and what it needs); returns its object number."""
    font_file = glyphless_font()
    file_obj = writer.add_stream(b"/Length1 %d" % len(font_file), font_file)
    name = FONT_NAME.encode()
    descriptor = writer.add(
        b"<< /Type /FontDescriptor /FontName /" + name + b" /Flags 4 /FontBBox [0 0 %d %d]"
        b" /ItalicAngle 0 /Ascent %d /Descent 0 /CapHeight %d /StemV 80 /FontFile2 %d 0 R >>"
        % (ADVANCE, UNITS_PER_EM, UNITS_PER_EM, UNITS_PER_EM, file_obj)
    )
    cid_to_gid = writer.add_stream(b"", b"\x00\x01" * 65536)
    cid_font = writer.add(
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /" + name + b" /CIDSystemInfo << /Registry (Adobe)"
        b" /Ordering (Identity) /Supplement 0 >> /FontDescriptor %d 0 R /DW %d /CIDToGIDMap %d 0 R >>"
        % (descriptor, ADVANCE, cid_to_gid)
    )
    to_unicode = writer.add_stream(b"", _to_unicode_cmap())
    return writer.add(
        b"<< /Type /Font /Subtype /Type0 /BaseFont /" + name + b" /Encoding /Identity-H"
        b" /DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (cid_font, to_unicode)
    )


def _hex(text: str) -> bytes:
    codes = [ord(ch) if ord(ch) <= 0xFFFF and not 0xD800 <= ord(ch) <= 0xDFFF else 0xFFFD for ch in text]
    return b"<" + b"".join(b"%04X" % c for c in codes) + b">"


@dataclass(frozen=True)
class Run:
    """Text to lay over ``bbox`` (points, top-left origin of the displayed page), reading
    along ``angle`` degrees counter-clockwise (0: left to right; a page OCR'd turned)."""

    text: str
    bbox: BBox
    angle: int = 0


def text_layer(runs: list[Run], height: float) -> bytes:
    """The content stream of an invisible text layer for a displayed page ``height`` points tall."""
    out = [b"BT 3 Tr"]
    em = ADVANCE / UNITS_PER_EM
    for run in runs:
        if not run.text:
            continue
        x0, y0, x1, y1 = run.bbox
        if x1 <= x0 or y1 <= y0:
            continue
        angle = run.angle % 360
        across, along = (x1 - x0, y1 - y0) if angle in (90, 270) else (y1 - y0, x1 - x0)
        size = max(across, 0.5)
        scale = 100.0 * along / (size * em * len(run.text))
        # the glyph box is baseline .. one em above it, so the origin is the box's corner
        # where the baseline starts, turned with the text
        origin, matrix = {
            0: ((x0, height - y1), (1, 0, 0, 1)),
            90: ((x1, height - y1), (0, 1, -1, 0)),
            180: ((x1, height - y0), (-1, 0, 0, -1)),
            270: ((x0, height - y0), (0, -1, 1, 0)),
        }.get(angle, ((x0, height - y1), (1, 0, 0, 1)))
        a, b, c, d = matrix
        out.append(
            b"/%s %s Tf %s Tz %d %d %d %d %s %s Tm %s Tj"
            % (
                FONT_RESOURCE,
                _num(size),
                _num(scale),
                a,
                b,
                c,
                d,
                _num(origin[0]),
                _num(origin[1]),
                _hex(run.text),
            )
        )
    out.append(b"ET")
    return b"\n".join(out)


def runs_of_page(page: dict[str, Any]) -> list[Run]:
    """What to write for one OCR'd page (a validated page dict): every word at its box, a
    space after each word but a line's last, so copied text keeps its spaces; a line
    without word boxes as a whole."""
    angle = int(page.get("rotation") or 0)
    runs: list[Run] = []
    for line in page["lines"]:
        words = line.get("words") or []
        if not words:
            runs.append(Run(line["text"], tuple(line["bbox"]), angle))
            continue
        last = len(words) - 1
        for i, word in enumerate(words):
            text = word["text"] + (" " if i < last else "")
            runs.append(Run(text, _widen(tuple(word["bbox"]), word["text"], text, angle), angle))
    return runs


def _widen(box: BBox, word: str, text: str, angle: int) -> BBox:
    """The box of ``text`` (the word and a trailing space) laid at ``box`` (the word's): the
    word keeps its box and the space adds one average character after it."""
    if text == word or not word:
        return box
    x0, y0, x1, y1 = box
    grow = len(text) / len(word)
    if angle == 0:
        return (x0, y0, x0 + (x1 - x0) * grow, y1)
    if angle == 180:
        return (x1 - (x1 - x0) * grow, y0, x1, y1)
    if angle == 90:
        return (x0, y1 - (y1 - y0) * grow, x1, y1)
    return (x0, y0, x1, y0 + (y1 - y0) * grow)
