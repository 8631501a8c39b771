"""Images, page selections and searchable PDFs through the real OCR pool (confined children).

One pool serves the module (fault engines on, a 20-page cap so frame bombs stay small).
Every image here is decoded, and every searchable PDF built, by a child that confined
itself: where the worker runs as root (as the test command does) each child has a uid of
its own and cannot read the Python installation under /root, so a single module imported
lazily in a child would fail the job. The zygote's warm-up is what makes them pass.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Iterator

import pypdfium2 as pdfium
import pytest

from contrackt.adapters.ocr import warmup
from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.textlayer import extract_text_layer
from contrackt.adapters.ocr.worker_child import WARM_UP_PDF
from contrackt.domain.errors import (
    ContracktError,
    CorruptImage,
    ImageTooLarge,
    PagesOutOfRange,
    SandboxViolation,
    TooManyPages,
)
from contrackt.domain.results import ExtractionResult
from contrackt.ports.extractor import ExtractOptions
from tests.conftest import corpus_path
from tests.documents import ground_truth, jpeg_bomb, png_bomb, png_of, tiff_frames, tiff_of
from tests.helpers_cer import corpus_cer, word_recall

MAX_PAGES = 20


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExtractor]:
    extractor = ProcessPoolExtractor(workers=2, fault_engines=True, max_pages=MAX_PAGES, page_timeout_s=60)
    asyncio.run(extractor.start())
    try:
        yield extractor
    finally:
        asyncio.run(extractor.close())


def run(pool: ProcessPoolExtractor, data: bytes, **options: object) -> ExtractionResult:
    return asyncio.run(pool.extract(data, ExtractOptions(**options)))  # type: ignore[arg-type]


def scan_mild() -> bytes:
    return corpus_path("synthetic", "scan_mild.pdf").read_bytes()


# ----------------------------------------------------------------------------- the warm-up


def test_children_cannot_read_the_python_install_yet_decode_every_image_kind(pool: ProcessPoolExtractor) -> None:
    """The proof that the zygote warmed every image code path: the children cannot import
    anything new (the stdlib is unreadable to them), and every mode and compression still
    decodes, OCRs and becomes a searchable PDF."""
    assert os.geteuid() == 0 and pool.uid_base is not None, (
        "this test needs the worker to run as root so that children get uids of their own; "
        "run the test command as root (it does on CI)"
    )
    import json

    stdlib_file = json.__file__
    pdf = WARM_UP_PDF + b"%PROBE:" + json.dumps([stdlib_file]).encode() + b"\n"
    report = json.loads(run(pool, pdf, engine="probe").pages[0].text)
    assert report["files"][stdlib_file] == "EACCES", "a child could read the Python installation"
    for media_type, data in warmup.sample_images():
        result = run(pool, data, media_type=media_type, searchable_pdf=True)
        assert result.pages and result.searchable_pdf is not None, media_type
        assert len(pdfium.PdfDocument(result.searchable_pdf)) == len(result.pages)


# ----------------------------------------------------------------------------- images and pages


def test_an_image_page_reads_like_the_pdf_page_it_was_made_from(pool: ProcessPoolExtractor) -> None:
    from_pdf = run(pool, scan_mild(), pages=(1,))
    from_png = run(pool, png_of(1), media_type="image/png")
    reference = ground_truth(1)
    pdf_cer = corpus_cer([(from_pdf.pages[0].text, reference)])
    png_cer = corpus_cer([(from_png.pages[0].text, reference)])
    print(f"\npage 1 CER: pdf {pdf_cer:.4%}, png {png_cer:.4%}")
    assert abs(png_cer - pdf_cer) <= 0.005
    # 200 dpi pixels are 0.36 pt: the PNG page has the PDF page's size and its lines sit where the PDF's do
    page = from_png.pages[0]
    assert (page.number, page.source, page.zoom) == (1, "ocr", 1.5)
    first_pdf, first_png = from_pdf.pages[0].lines[0].bbox, page.lines[0].bbox
    assert all(abs(a - b) < 3.0 for a, b in zip(first_pdf, first_png, strict=True)), (first_pdf, first_png)
    assert page.lines[-1].bbox[3] < 842


def test_pages_2_3_of_a_tiff_and_of_a_pdf_are_exactly_those_pages(pool: ProcessPoolExtractor) -> None:
    for data, media_type in ((tiff_of(1, 2, 3), "image/tiff"), (scan_mild(), "application/pdf")):
        progress: list[tuple[int, int]] = []

        async def record(done: int, total: int, seen: list[tuple[int, int]] = progress) -> None:
            seen.append((done, total))

        result = asyncio.run(pool.extract(data, ExtractOptions(media_type=media_type, pages=(2, 3)), record))
        assert [p.number for p in result.pages] == [2, 3], media_type
        assert corpus_cer([(p.text, ground_truth(p.number)) for p in result.pages]) < 0.01, media_type
        assert progress[-1] == (2, 2)


def test_pages_the_document_does_not_have_fail_the_job(pool: ProcessPoolExtractor) -> None:
    with pytest.raises(PagesOutOfRange, match=r"has 3 pages.*page 4"):
        run(pool, tiff_of(1, 2, 3), media_type="image/tiff", pages=(2, 4))
    with pytest.raises(PagesOutOfRange, match="has 1 page;"):
        run(pool, png_of(1), media_type="image/png", pages=(2,))


# ----------------------------------------------------------------------------- bombs


@pytest.mark.parametrize(
    ("name", "data", "media_type", "error"),
    [
        ("PNG declaring 100,000 x 100,000", png_bomb(), "image/png", ImageTooLarge),
        ("JPEG declaring 65,000 x 65,000", jpeg_bomb(), "image/jpeg", ImageTooLarge),
        (
            "TIFF whose 3rd frame declares 60,000 x 60,000",
            tiff_frames([(8, 8), (8, 8), (60_000, 60_000)]),
            "image/tiff",
            ImageTooLarge,
        ),
        ("TIFF of 5,000 frames", tiff_frames([(8, 8)] * 5_000), "image/tiff", TooManyPages),
        ("PNG signature and garbage", b"\x89PNG\r\n\x1a\n" + os.urandom(300), "image/png", CorruptImage),
        ("TIFF header and garbage", b"II*\x00" + os.urandom(300), "image/tiff", CorruptImage),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_image_bombs_end_with_a_clean_error(
    pool: ProcessPoolExtractor, name: str, data: bytes, media_type: str, error: type[ContracktError]
) -> None:
    started = time.monotonic()
    with pytest.raises(error):
        run(pool, data, media_type=media_type)
    elapsed = time.monotonic() - started
    print(f"\n{name}: {error.code} in {elapsed:.2f} s ({len(data)} bytes)")
    assert elapsed < 10
    # the pool is fine afterwards
    assert run(pool, tiff_frames([(8, 8)]), media_type="image/tiff").pages[0].number == 1


# ----------------------------------------------------------------------------- searchable PDFs


def test_a_born_digital_pdf_is_its_own_searchable_pdf_and_a_selection_keeps_its_pages(
    pool: ProcessPoolExtractor,
) -> None:
    original = corpus_path("synthetic", "born_digital.pdf").read_bytes()
    assert run(pool, original, searchable_pdf=True).searchable_pdf == original
    selected = run(pool, original, pages=(2, 6), searchable_pdf=True)
    assert selected.searchable_pdf is not None
    copy, source = pdfium.PdfDocument(selected.searchable_pdf), pdfium.PdfDocument(original)
    assert len(copy) == 2
    for k, number in enumerate((2, 6)):  # the text layer as it was: no text added
        assert copy[k].get_textpage().get_text_range() == source[number - 1].get_textpage().get_text_range()


def _turned(pdf: bytes) -> bytes:
    """Pages 1 and 2 of ``pdf``: page 1 shown turned a quarter (/Rotate 90), page 2 cropped."""
    src = pdfium.PdfDocument(pdf)
    out = pdfium.PdfDocument.new()
    out.import_pages(src, [0, 1])
    out[0].set_rotation(90)
    out[1].set_cropbox(20, 30, 580, 830)
    buffer = io.BytesIO()
    out.save(buffer)
    return buffer.getvalue()


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_the_text_layer_lands_on_the_words_of_turned_and_cropped_pages(pool: ProcessPoolExtractor) -> None:
    result = run(pool, _turned(scan_mild()), searchable_pdf=True)
    assert result.searchable_pdf is not None
    doc = pdfium.PdfDocument(result.searchable_pdf)
    assert result.pages[0].rotation in (90, 270)
    for k, page in enumerate(result.pages):
        # the layer read back as a viewer would (displayed page, top-left origin, points)
        layer = extract_text_layer(doc[k])
        back: dict[str, list[tuple[float, float, float, float]]] = {}
        for ln in layer.lines:
            for text, box in ln.words:
                back.setdefault(text, []).append(box)
        words = [w for ln in page.lines for w in ln.words]
        matched = sum(any(_iou(w.bbox, box) > 0.5 for box in back.get(w.text, ())) for w in words)
        assert matched >= 0.98 * len(words), (page.number, matched, len(words))
        assert word_recall(doc[k].get_textpage().get_text_range(), ground_truth(page.number)) >= 0.98


def test_an_image_becomes_a_searchable_pdf_of_its_frames(pool: ProcessPoolExtractor) -> None:
    result = run(pool, tiff_of(1, 2, 3), media_type="image/tiff", pages=(2, 3), searchable_pdf=True)
    assert result.searchable_pdf is not None
    doc = pdfium.PdfDocument(result.searchable_pdf)
    assert len(doc) == 2
    for k, number in enumerate((2, 3)):
        width, height = doc[k].get_size()
        assert abs(width - 1655 * 72 / 200) < 1 and abs(height - 2339 * 72 / 200) < 1
        assert word_recall(doc[k].get_textpage().get_text_range(), ground_truth(number)) >= 0.98
        # the frame is drawn: the rendered page is not blank
        assert doc[k].render(scale=1).to_pil().convert("L").getextrema()[0] < 100


@pytest.mark.parametrize("fault", ["oversize", "garbage"])
def test_a_searchable_reply_outside_the_protocol_is_a_sandbox_violation(pool: ProcessPoolExtractor, fault: str) -> None:
    pdf = WARM_UP_PDF + f"%SEARCHABLE:{fault}\n".encode()
    with pytest.raises(SandboxViolation):
        run(pool, pdf, mode="ocr", searchable_pdf=True)


def test_a_searchable_pdf_that_cannot_be_built_leaves_the_text_result(pool: ProcessPoolExtractor) -> None:
    result = run(pool, WARM_UP_PDF + b"%SEARCHABLE:fail\n", mode="ocr", searchable_pdf=True)
    assert result.searchable_pdf is None
    assert "Contrackt" in result.text
