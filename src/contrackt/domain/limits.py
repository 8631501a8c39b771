"""Input limits and sniffing the document type from its first bytes (pure)."""

from __future__ import annotations

PDF_MAGIC = b"%PDF-"
PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"
TIFF = "image/tiff"
MEDIA_TYPES = (PDF, JPEG, PNG, TIFF)
IMAGE_TYPES = (JPEG, PNG, TIFF)
# Every type is recognised at offset 0 only: a file that is two things at once (a GIF or
# HTML page that is also a PDF) is a classic polyglot trick.
MAGIC = (
    (PDF_MAGIC, PDF),
    (b"\xff\xd8\xff", JPEG),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"II*\x00", TIFF),  # little-endian TIFF
    (b"MM\x00*", TIFF),  # big-endian TIFF
)
SNIFF_BYTES = 8


def looks_like_pdf(head: bytes) -> bool:
    """True when the bytes start with the PDF header at offset 0.

    Readers tolerate a header anywhere in the first KiB; we do not, because a
    file that is both a GIF (or HTML) and a PDF is a classic polyglot trick.
    """
    return head.startswith(PDF_MAGIC)


def sniff_media_type(head: bytes) -> str | None:
    """The accepted type whose signature starts ``head`` (PDF, JPEG, PNG, TIFF), or None."""
    for magic, media_type in MAGIC:
        if head.startswith(magic):
            return media_type
    return None
