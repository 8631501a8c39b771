"""A TrueType font of one box-shaped glyph, built byte by byte, for invisible text layers.

A searchable PDF's text is drawn in render mode 3 (neither filled nor stroked):
viewers select and search it, nobody sees it. The font it names must still exist,
be embedded (viewers warn about, or substitute, fonts that are not) and give every
character a width and a height. This one has an empty ``.notdef`` and one glyph, a
box half an em wide and an em tall; the PDF maps every character code to it (``CIDToGIDMap``) and
back to its Unicode value (``ToUnicode``), so any BMP character can be written.

Only the standard library; the tables follow Apple's and Microsoft's TrueType
specifications (``head``, ``hhea``, ``maxp``, ``OS/2``, ``hmtx``, ``cmap``,
``loca``, ``glyf``, ``name``, ``post``).
"""

from __future__ import annotations

import struct
from functools import cache

UNITS_PER_EM = 1000
ADVANCE = 500  # every glyph's advance width, in font units (half an em)
ASCENT = 1000  # the glyph box spans baseline .. one em: a line's box is its font size
DESCENT = 0
FONT_NAME = "ContracktGlyphless"


def _checksum(data: bytes) -> int:
    padded = data + b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(padded) // 4}I", padded)
    return sum(words) & 0xFFFFFFFF


def _name_table() -> bytes:
    records = [(1, "ContracktGlyphless"), (2, "Regular"), (4, FONT_NAME), (6, FONT_NAME)]
    strings = b""
    entries = b""
    for name_id, value in records:
        encoded = value.encode("utf-16-be")
        # platform 3 (Windows), encoding 1 (Unicode BMP), language 0x409
        entries += struct.pack(">6H", 3, 1, 0x409, name_id, len(encoded), len(strings))
        strings += encoded
    header = struct.pack(">3H", 0, len(records), 6 + 12 * len(records))
    return header + entries + strings


def _cmap_table() -> bytes:
    # Format 4 with the one mandatory final segment (0xFFFF -> .notdef): the PDF maps
    # codes to glyphs itself (CIDToGIDMap), so the font's own map is empty.
    subtable = struct.pack(">7H", 4, 24, 0, 2, 2, 0, 0) + struct.pack(">5H", 0xFFFF, 0, 0xFFFF, 1, 0)
    return struct.pack(">2H", 0, 1) + struct.pack(">2HI", 3, 1, 12) + subtable


def _box_glyph() -> bytes:
    """Glyph 1: one rectangle, the advance wide and an em tall. Text in render mode 3 never
    draws it; its box is what viewers select and highlight, and what tells PDFium that a
    line written top to bottom has a width at all."""
    points = ((0, 0), (ADVANCE, 0), (ADVANCE, ASCENT), (0, ASCENT))
    xs = [b - a for a, b in zip((0, *(p[0] for p in points)), (p[0] for p in points), strict=False)]
    ys = [b - a for a, b in zip((0, *(p[1] for p in points)), (p[1] for p in points), strict=False)]
    data = struct.pack(">hhhhh", 1, 0, DESCENT, ADVANCE, ASCENT)  # one contour, its box
    data += struct.pack(">HH", len(points) - 1, 0)  # last point of the contour; no instructions
    data += bytes([0x01] * len(points))  # every point on the curve, coordinates as 16-bit deltas
    data += struct.pack(f">{len(xs)}h", *xs) + struct.pack(f">{len(ys)}h", *ys)
    return data + b"\0" * (-len(data) % 4)


def _tables() -> dict[bytes, bytes]:
    glyphs = 2
    head = struct.pack(
        ">IIIIHHqqhhhhHHhhh",
        0x00010000,  # version
        0x00010000,  # font revision
        0,  # checksum adjustment, filled in below
        0x5F0F3CF5,  # magic
        0x000B,  # flags: baseline at y=0, lsb at x=0, integer scaling
        UNITS_PER_EM,
        0,  # created
        0,  # modified
        0,  # xMin
        DESCENT,  # yMin
        ADVANCE,  # xMax
        ASCENT,  # yMax
        0,  # macStyle
        8,  # lowest readable size
        2,  # font direction hint
        0,  # short loca offsets
        0,  # glyph data format
    )
    hhea = struct.pack(
        ">IhhhHhhhhhhhhhhhH",
        0x00010000,
        ASCENT,
        DESCENT,
        0,  # line gap
        ADVANCE,  # advance width max
        0,  # min left side bearing
        0,  # min right side bearing
        0,  # x max extent
        1,  # caret slope rise
        0,  # caret slope run
        0,  # caret offset
        0,
        0,
        0,
        0,  # reserved
        0,  # metric data format
        glyphs,
    )
    maxp = struct.pack(">IHHHHHHHHHHHHHH", 0x00010000, glyphs, 4, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)
    os2 = struct.pack(
        ">HhHHHhhhhhhhhhhh10sIIII4sHHHhhhHH",
        1,  # version
        ADVANCE,  # average char width
        400,  # weight
        5,  # width class
        0,  # embedding: installable
        650,
        700,
        0,
        140,  # subscript size and offset
        650,
        700,
        0,
        480,  # superscript size and offset
        50,
        250,  # strikeout size and position
        0,  # family class
        b"\0" * 10,  # PANOSE
        0,
        0,
        0,
        0,  # Unicode ranges
        b"CTKT",  # vendor
        0x0040,  # selection: regular
        0x0000,  # first char
        0xFFFF,  # last char
        ASCENT,  # typo ascender
        DESCENT,  # typo descender
        0,  # typo line gap
        ASCENT,  # win ascent
        -DESCENT,  # win descent
    ) + struct.pack(">II", 1, 0)  # code page ranges (version 1): Latin 1
    hmtx = struct.pack(">HhHh", ADVANCE, 0, ADVANCE, 0)
    glyf = _box_glyph()
    loca = struct.pack(">3H", 0, 0, len(glyf) // 2)  # .notdef empty; glyph 1 the box (short offsets: /2)
    post = struct.pack(">IIhhIIIII", 0x00030000, 0, -100, 50, 0, 0, 0, 0, 0)
    return {
        b"OS/2": os2,
        b"cmap": _cmap_table(),
        b"glyf": glyf,
        b"head": head,
        b"hhea": hhea,
        b"hmtx": hmtx,
        b"loca": loca,
        b"maxp": maxp,
        b"name": _name_table(),
        b"post": post,
    }


@cache
def glyphless_font() -> bytes:
    """The font file (a few hundred bytes; the same bytes every time)."""
    tables = _tables()
    count = len(tables)
    power = 1
    while power * 2 <= count:
        power *= 2
    search_range = power * 16
    header = struct.pack(">IHHHH", 0x00010000, count, search_range, power.bit_length() - 1, count * 16 - search_range)
    offset = len(header) + 16 * count
    directory = b""
    body = b""
    head_at = 0
    for tag in sorted(tables):
        data = tables[tag]
        if tag == b"head":
            head_at = offset + len(body)
        directory += struct.pack(">4sIII", tag, _checksum(data), offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    font = bytearray(header + directory + body)
    adjustment = (0xB1B0AFBA - _checksum(bytes(font))) & 0xFFFFFFFF
    struct.pack_into(">I", font, head_at + 8, adjustment)
    return bytes(font)
