"""Text-layer extraction with pypdfium2 (the born-digital fast path).

Runs inside a child process.  Lines come in PDFium's reading order, one printed
line per line, with boxes in PDF points relative to the displayed page
(after /Rotate and the crop box), origin top-left.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import pypdfium2 as pdfium

# A page "has a text layer" when it yields at least this many visible characters
# and most of them are real characters (not U+FFFD / control / private use,
# which is what fonts without a ToUnicode map produce).
MIN_TEXT_CHARS = 20
MIN_GOOD_RATIO = 0.6

BBox = tuple[float, float, float, float]


@dataclass
class TextLine:
    text: str
    bbox: BBox


@dataclass
class TextLayer:
    lines: list[TextLine]
    visible_chars: int
    good_chars: int

    @property
    def meaningful(self) -> bool:
        if self.visible_chars < MIN_TEXT_CHARS:
            return False
        return self.good_chars >= MIN_GOOD_RATIO * self.visible_chars


def _is_good_char(ch: str) -> bool:
    if ch == "\ufffd":
        return False
    cat = unicodedata.category(ch)
    return cat[0] != "C"  # Cc control, Cf format, Co private use, Cn unassigned, Cs surrogate


class PageTransform:
    """Maps PDF user-space points to the displayed page (top-left origin, points)."""

    def __init__(self, page: Any) -> None:
        left, bottom, right, top = page.get_bbox()  # crop box ∩ media box
        self.x0 = float(left)
        self.y1 = float(top)
        self.w = float(right) - float(left)
        self.h = float(top) - float(bottom)
        try:
            self.rotation = int(page.get_rotation()) % 360
        except Exception:
            self.rotation = 0

    def point(self, x: float, y: float) -> tuple[float, float]:
        u = x - self.x0
        v = self.y1 - y
        r = self.rotation
        if r == 90:
            return self.h - v, u
        if r == 180:
            return self.w - u, self.h - v
        if r == 270:
            return v, self.w - u
        return u, v

    def rect(self, left: float, bottom: float, right: float, top: float) -> BBox:
        ax, ay = self.point(left, top)
        bx, by = self.point(right, bottom)
        return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def extract_text_layer(page: Any) -> TextLayer:
    """Read the page's text layer: lines in reading order with their boxes."""
    textpage = page.get_textpage()
    try:
        n = int(textpage.count_chars())
        if n <= 0:
            return TextLayer([], 0, 0)
        raw = textpage.get_text_range(0, n)
        if len(raw) != n:
            # Characters outside the BMP come back as surrogate pairs: rebuild the
            # string one character per index so text and boxes stay aligned.
            raw = "".join(_char_at(textpage, i) for i in range(n))
        transform = PageTransform(page)
        lines: list[TextLine] = []
        visible = good = 0
        buf: list[str] = []
        box: list[float] | None = None

        def flush() -> None:
            nonlocal box
            text = "".join(buf).strip()
            buf.clear()
            if text:
                bbox = transform.rect(*box) if box is not None else (0.0, 0.0, 0.0, 0.0)
                lines.append(TextLine(text, bbox))
            box = None

        i = 0
        while i < n:
            ch = raw[i]
            if ch in "\r\n":
                flush()
                i += 1
                continue
            buf.append(ch)
            if not ch.isspace():
                visible += 1
                if _is_good_char(ch):
                    good += 1
                try:
                    left, bottom, right, top = textpage.get_charbox(i)
                except Exception:
                    left = bottom = right = top = None
                if left is not None and right > left and top > bottom:
                    if box is None:
                        box = [left, bottom, right, top]
                    else:
                        box[0] = min(box[0], left)
                        box[1] = min(box[1], bottom)
                        box[2] = max(box[2], right)
                        box[3] = max(box[3], top)
            i += 1
        flush()
        return TextLayer(lines, visible, good)
    finally:
        textpage.close()


def _char_at(textpage: Any, index: int) -> str:
    code = int(pdfium.raw.FPDFText_GetUnicode(textpage.raw, index))
    try:
        return chr(code) if code else " "
    except (ValueError, OverflowError):
        return "\ufffd"
