"""The searchable PDF: built inside the OCR child that holds the document, from validated pages.

The parent sends the pages it has checked (``check_page``); this child still
holds the document, so nothing leaves the sandbox but the finished file.

- A PDF keeps its pages as they are; each OCR'd page gets an invisible text
  layer (``pdfgen.text_layer``), written as a one-page PDF by hand, turned into
  a form XObject by PDFium and laid over the page in the page's own coordinate
  system (crop box origin and ``/Rotate`` undone). Pages that had a text layer
  are left alone. With a page selection, the file holds the selected pages only.
- An image becomes a PDF by hand: one page per frame, its size from the
  frame's resolution, the frame drawn over the whole page (JPEG files as they
  are, lossy sources re-encoded as JPEG, the rest Flate-compressed) and the
  text layer on top.

The result must fit ``cap`` bytes (the parent refuses anything longer unread).
"""

from __future__ import annotations

import io
from typing import Any

from contrackt.adapters.ocr.images import Frame, ImageDocument, rgb
from contrackt.adapters.ocr.pdfgen import FONT_RESOURCE, PdfWriter, _num, add_glyphless_font, runs_of_page, text_layer

JPEG_QUALITY = 90


class TooLarge(Exception):
    """The searchable PDF would be larger than its cap."""


def _overlay_matrix(page: Any) -> tuple[float, float, float, float, float, float]:
    """Maps the displayed page (origin bottom-left, after /Rotate) to the page's user space."""
    left, bottom, right, top = (float(v) for v in page.get_bbox())
    width = right - left
    try:
        rotation = int(page.get_rotation()) % 360
    except Exception:
        rotation = 0
    return {
        0: (1.0, 0.0, 0.0, 1.0, left, bottom),
        90: (0.0, 1.0, -1.0, 0.0, left + width, bottom),
        180: (-1.0, 0.0, 0.0, -1.0, left + width, top),
        270: (0.0, -1.0, 1.0, 0.0, left, top),
    }.get(rotation, (1.0, 0.0, 0.0, 1.0, left, bottom))


def _layer_document(sizes: list[tuple[float, float]], contents: list[bytes]) -> bytes:
    """A PDF of text layers only: page k is ``sizes[k]`` points with ``contents[k]``."""
    writer = PdfWriter()
    font = add_glyphless_font(writer)
    pages = writer.reserve()
    kids = []
    for (width, height), content in zip(sizes, contents, strict=True):
        stream = writer.add_stream(b"", content)
        kids.append(
            writer.add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] /Resources << /Font << /%s %d 0 R >> >>"
                b" /Contents %d 0 R >>" % (pages, _num(width), _num(height), FONT_RESOURCE, font, stream)
            )
        )
    writer.set(pages, b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids)))
    return writer.finish(writer.add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages))


def pdf_with_text(doc: Any, pages: list[dict[str, Any]], cap: int) -> bytes:
    """``doc`` (an open pypdfium2 document) with text layers on its OCR'd pages."""
    import pypdfium2 as pdfium

    numbers = [int(p["number"]) for p in pages]
    if numbers == list(range(1, len(doc) + 1)):
        target = doc
    else:
        target = pdfium.PdfDocument.new()
        target.import_pages(doc, [n - 1 for n in numbers])
    where: list[int] = []
    sizes: list[tuple[float, float]] = []
    contents: list[bytes] = []
    for k, page in enumerate(pages):
        if page.get("source") != "ocr" or not page["lines"]:
            continue
        width, height = (float(v) for v in target[k].get_size())
        where.append(k)
        sizes.append((width, height))
        contents.append(text_layer(runs_of_page(page), height))
    if where:
        layers = pdfium.PdfDocument(_layer_document(sizes, contents))
        for i, k in enumerate(where):
            page = target[k]
            form = layers.page_as_xobject(i, target).as_pageobject()
            form.transform(pdfium.PdfMatrix(*_overlay_matrix(page)))
            page.insert_obj(form)
            page.gen_content()
    buffer = io.BytesIO()
    target.save(buffer)
    out = buffer.getvalue()
    if len(out) > cap:
        raise TooLarge(f"the searchable PDF is {len(out)} bytes")
    return out


def _image_object(writer: PdfWriter, frame: Frame) -> int:
    image = frame.image
    width, height = image.size
    if frame.original_jpeg is not None:
        space = b"/DeviceGray" if image.mode == "L" else b"/DeviceRGB"
        entries = b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s /BitsPerComponent 8" % (
            width,
            height,
            space,
        )
        return writer.add_stream(entries + b" /Filter /DCTDecode", frame.original_jpeg, compress=False)
    if image.mode == "1":
        pixels, space, bits = image, b"/DeviceGray", 1
    elif image.mode == "L":
        pixels, space, bits = image, b"/DeviceGray", 8
    else:
        pixels, space, bits = rgb(image), b"/DeviceRGB", 8
    entries = b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s /BitsPerComponent %d" % (
        width,
        height,
        space,
        bits,
    )
    if frame.lossy and bits == 8:
        buffer = io.BytesIO()
        pixels.save(buffer, "JPEG", quality=JPEG_QUALITY)
        return writer.add_stream(entries + b" /Filter /DCTDecode", buffer.getvalue(), compress=False)
    return writer.add_stream(entries, pixels.tobytes())


def image_pdf(source: ImageDocument, pages: list[dict[str, Any]], cap: int) -> bytes:
    """A PDF of the selected frames of ``source``, each with its text layer."""
    writer = PdfWriter()
    font = add_glyphless_font(writer)
    pages_obj = writer.reserve()
    kids = []
    size = 4096
    for page in pages:
        frame = source.frame(int(page["number"]) - 1)
        width, height = frame.size_pt
        image = _image_object(writer, frame)
        del frame  # one decoded frame in memory at a time
        drawing = b"q %s 0 0 %s 0 0 cm /Im0 Do Q\n" % (_num(width), _num(height))
        if page.get("source") == "ocr" and page["lines"]:
            drawing += text_layer(runs_of_page(page), height)
        content = writer.add_stream(b"", drawing)
        kids.append(
            writer.add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] /Resources << /Font << /%s %d 0 R >>"
                b" /XObject << /Im0 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_obj, _num(width), _num(height), FONT_RESOURCE, font, image, content)
            )
        )
        size += writer.size_of(image) + writer.size_of(content) + 256
        if size > cap:
            raise TooLarge(f"the searchable PDF is over {cap} bytes")
    writer.set(
        pages_obj, b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    )
    out = writer.finish(writer.add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj))
    if len(out) > cap:
        raise TooLarge(f"the searchable PDF is {len(out)} bytes")
    return out
