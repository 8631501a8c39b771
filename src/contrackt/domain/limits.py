"""Input limits and PDF sniffing (pure)."""

from __future__ import annotations

PDF_MAGIC = b"%PDF-"


def looks_like_pdf(head: bytes) -> bool:
    """True when the bytes start with the PDF header at offset 0.

    Readers tolerate a header anywhere in the first KiB; we do not, because a
    file that is both a GIF (or HTML) and a PDF is a classic polyglot trick.
    """
    return head.startswith(PDF_MAGIC)
