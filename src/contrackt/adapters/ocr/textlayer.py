"""Text-layer extraction with pypdfium2 (the born-digital fast path).

Runs inside a child process.  Lines come in PDFium's reading order, one printed
line per line, with boxes in PDF points relative to the displayed page
(after /Rotate and the crop box), origin top-left.
"""

from __future__ import annotations

import ctypes
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import pypdfium2 as pdfium

# A page "has a text layer" when it yields at least this many visible characters
# and most of them are real characters (not U+FFFD / control / private use,
# which is what fonts without a ToUnicode map produce).
MIN_TEXT_CHARS = 20
MIN_GOOD_RATIO = 0.6

BBox = tuple[float, float, float, float]


class TextLimitExceeded(Exception):
    """The page's text layer is larger than the caller's caps (an output bomb)."""


@dataclass
class TextLine:
    text: str
    bbox: BBox
    # each word (a run of non-space characters) and its box; empty when a word has no box
    words: list[tuple[str, BBox]] = field(default_factory=list)


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


def extract_text_layer(page: Any, max_chars: int | None = None, max_lines: int | None = None) -> TextLayer:
    """Read the page's text layer: lines in reading order with their boxes.

    ``max_chars`` / ``max_lines``: raise ``TextLimitExceeded`` as soon as the page is
    known to be over either (the character count is known before any text is read).

    Boxes come from PDFium's text rectangles, a few ctypes calls per *line*
    (``FPDFText_CountRects`` over the line's character range, then
    ``FPDFText_GetRect``) instead of one call per character; character
    statistics are computed on the string, once per distinct character.
    """
    textpage = page.get_textpage()
    try:
        n = int(textpage.count_chars())
        if n <= 0:
            return TextLayer([], 0, 0)
        if max_chars is not None and n > max_chars:
            raise TextLimitExceeded(f"the page has {n} characters")
        raw = textpage.get_text_range(0, n)
        if len(raw) != n:
            # Characters outside the BMP come back as surrogate pairs: rebuild the
            # string one character per index so text and ranges stay aligned.
            raw = "".join(_char_at(textpage, i) for i in range(n))
        visible, good = _char_stats(raw)
        transform = PageTransform(page)
        tp = textpage.raw
        count_rects = pdfium.raw.FPDFText_CountRects
        get_rect = pdfium.raw.FPDFText_GetRect
        left, top, right, bottom = (ctypes.c_double() for _ in range(4))
        refs = (ctypes.byref(left), ctypes.byref(top), ctypes.byref(right), ctypes.byref(bottom))
        lines: list[TextLine] = []
        for match in _LINE.finditer(raw):
            segment = match.group()
            text = segment.strip()
            if not text:
                continue
            start = match.start() + (len(segment) - len(segment.lstrip()))
            stop = start + len(text)

            def union(first: int, end: int) -> list[float] | None:
                box: list[float] | None = None
                for k in range(max(0, int(count_rects(tp, first, end - first)))):
                    if not get_rect(tp, k, *refs):
                        continue
                    lo, bo, ri, to = left.value, bottom.value, right.value, top.value
                    if ri <= lo or to <= bo:
                        continue
                    if box is None:
                        box = [lo, bo, ri, to]
                    else:
                        box = [min(box[0], lo), min(box[1], bo), max(box[2], ri), max(box[3], to)]
                return box

            box = union(start, stop)
            if box is None:  # degenerate rectangles (broken fonts): ask char by char
                box = _char_union(textpage, start, stop)
            bbox = transform.rect(*box) if box is not None else (0.0, 0.0, 0.0, 0.0)
            words: list[tuple[str, BBox]] = []
            for word in _WORD.finditer(text):
                first, end = start + word.start(), start + word.end()
                # most words are one rectangle: two calls instead of a loop
                word_box: list[float] | None
                if count_rects(tp, first, end - first) == 1 and get_rect(tp, 0, *refs):
                    lo, bo, ri, to = left.value, bottom.value, right.value, top.value
                    word_box = [lo, bo, ri, to] if ri > lo and to > bo else None
                else:
                    word_box = union(first, end)
                if word_box is None:
                    words = []  # no box rather than a wrong one
                    break
                words.append((word.group(), transform.rect(*word_box)))
            lines.append(TextLine(text, bbox, words))
            if max_lines is not None and len(lines) > max_lines:
                raise TextLimitExceeded(f"the page has more than {max_lines} lines")
        return TextLayer(lines, visible, good)
    finally:
        textpage.close()


_LINE = re.compile(r"[^\r\n]+")
_WORD = re.compile(r"\S+")


def _char_stats(raw: str) -> tuple[int, int]:
    """(visible characters, good characters) of ``raw``, whitespace excluded."""
    visible = good = 0
    for ch in set(raw):
        if ch.isspace():
            continue
        k = raw.count(ch)
        visible += k
        if _is_good_char(ch):
            good += k
    return visible, good


def _char_union(textpage: Any, start: int, stop: int) -> list[float] | None:
    box: list[float] | None = None
    for i in range(start, stop):
        try:
            lo, bo, ri, to = textpage.get_charbox(i)
        except pdfium.PdfiumError:
            lo = ri = bo = to = 0.0
        if ri <= lo or to <= bo:
            continue
        if box is None:
            box = [lo, bo, ri, to]
        else:
            box = [min(box[0], lo), min(box[1], bo), max(box[2], ri), max(box[3], to)]
    return box


def _char_at(textpage: Any, index: int) -> str:
    code = int(pdfium.raw.FPDFText_GetUnicode(textpage.raw, index))
    try:
        return chr(code) if code else " "
    except (ValueError, OverflowError):
        return "\ufffd"
