"""Hostile documents built in the tests: tiny files whose extracted output is enormous."""

from __future__ import annotations

import zlib


def output_bomb(pages: int = 3, lines_per_page: int = 20_000) -> bytes:
    """A PDF of ``pages`` pages that all share one Flate content stream printing ``Ab`` on
    ``lines_per_page`` lines: a few kilobytes that extract to ``pages * lines_per_page`` lines."""
    content = b"BT /F1 1 Tf 1 TL 10 830 Td " + b"(Ab) Tj T* " * lines_per_page + b"ET"
    packed = zlib.compress(content, 9)
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages)).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream",
    ]
    font = 4 + pages
    for _ in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 3 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % font
        )
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
