"""Image documents for tests: corpus pages as PNG and TIFF, and hand-made image bombs.

The corpus pages are ``scan_mild.pdf``'s, rendered at 200 dpi (the scan's own
resolution) in grey, so an image and the PDF page it came from hold the same
pixels. The bombs are written byte by byte: their headers declare what a
decoder would have to allocate, their bodies are a few bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import pypdfium2 as pdfium
from PIL import Image

from tests.conftest import corpus_path

DPI = 200


@cache
def scan_page(number: int) -> Image.Image:
    """Page ``number`` of scan_mild.pdf as a grey image at 200 dpi."""
    doc = pdfium.PdfDocument(corpus_path("synthetic", "scan_mild.pdf").read_bytes())
    try:
        return doc[number - 1].render(scale=DPI / 72).to_pil().convert("L")
    finally:
        doc.close()


def png_of(number: int) -> bytes:
    buffer = io.BytesIO()
    scan_page(number).save(buffer, "PNG", dpi=(DPI, DPI))
    return buffer.getvalue()


def tiff_of(*numbers: int, compression: str = "tiff_lzw") -> bytes:
    """A multi-page TIFF of the given pages (LZW, as scanners write them)."""
    frames = [scan_page(n) for n in numbers]
    buffer = io.BytesIO()
    frames[0].save(buffer, "TIFF", compression=compression, dpi=(DPI, DPI), save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def ground_truth(number: int) -> str:
    return corpus_path("synthetic", "gt", f"page_{number:02d}.txt").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- bombs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels and holds a few compressed bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def jpeg_bomb(size: int = 65_000) -> bytes:
    """A real small JPEG whose frame header is changed to declare ``size`` x ``size`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 255).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, size, size)  # height, width
    return bytes(data)


def tiff_frames(sizes: list[tuple[int, int]]) -> bytes:
    """A little-endian TIFF with one uncompressed grey frame per size; pixel data is shared (one
    white strip), so a frame that declares millions of pixels costs no bytes."""
    strip = b"\xff" * 64
    out = bytearray(b"II*\x00" + struct.pack("<I", 8 + len(strip)) + strip)
    for k, (width, height) in enumerate(sizes):
        tags = [
            (256, 4, width),  # ImageWidth (LONG)
            (257, 4, height),  # ImageLength
            (258, 3, 8),  # BitsPerSample
            (259, 3, 1),  # Compression: none
            (262, 3, 1),  # Photometric: black is zero
            (273, 4, 8),  # StripOffsets
            (277, 3, 1),  # SamplesPerPixel
            (278, 4, height),  # RowsPerStrip
            (279, 4, width * height),  # StripByteCounts (declared: the decoder would need them)
        ]
        last = k == len(sizes) - 1
        ifd = struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            ifd += struct.pack("<HHI", tag, kind, 1) + (
                struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            )
        nxt = 0 if last else len(out) + len(ifd) + 4
        out += ifd + struct.pack("<I", nxt)
    return bytes(out)


def png_top_of(number: int, share: float) -> bytes:
    """The top ``share`` of scan page ``number`` as a 200 dpi PNG (fewer lines to read)."""
    page = scan_page(number)
    buffer = io.BytesIO()
    page.crop((0, 0, page.width, round(page.height * share))).save(buffer, "PNG", dpi=(DPI, DPI))
    return buffer.getvalue()


def jpx_pdf_of(number: int, dpi: int = 100, share: float = 1.0) -> bytes:
    """A one-page PDF whose page is (the top ``share`` of) scan page ``number`` as a JPEG 2000
    image (/JPXDecode), the way many scanners write them; written object by object, with its
    cross-reference table."""
    image = scan_page(number)
    image = image.crop((0, 0, image.width, round(image.height * share)))
    image = image.resize((round(image.width * dpi / DPI), round(image.height * dpi / DPI)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG2000")
    jpx = buffer.getvalue()
    width, height = image.width * 72 / dpi, image.height * 72 / dpi
    content = f"q {width:.2f} 0 0 {height:.2f} 0 0 cm /Im0 Do Q".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:.2f} {height:.2f}] "
        "/Resources << /XObject << /Im0 5 0 R >> >> /Contents 4 0 R >>".encode(),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8 "
        b"/Filter /JPXDecode /Length %d >>\nstream\n%s\nendstream" % (image.width, image.height, len(jpx), jpx),
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (n, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()
