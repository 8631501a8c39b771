"""End-to-end tests of the OCR adapter on the shared corpus.

One ``ProcessPoolExtractor`` (two warm children plus the inspect child) serves
the whole module.  The pool is loop-agnostic, so each test drives it with its
own ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.domain.errors import (
    CorruptPdf,
    EncryptedPdf,
    ExtractionTimeout,
    InvalidRequest,
    ResourceLimit,
    TooManyPages,
    UnknownEngine,
)
from contrackt.domain.results import ExtractionResult
from contrackt.ports.extractor import ExtractOptions
from helpers_cer import cer, corpus_cer

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
SYNTH = CORPUS / "synthetic"
BAD = CORPUS / "badpdf"


def _corpus_file(path: Path) -> bytes:
    if not CORPUS.is_dir():
        pytest.fail(f"test corpus missing: expected it at {CORPUS} (../shared/corpus from the repo)")
    if not path.is_file():
        pytest.fail(f"corpus file missing: {path}")
    return path.read_bytes()


def _ground_truth() -> list[str]:
    return [_corpus_file(SYNTH / "gt" / f"page_{n:02d}.txt").decode("utf-8") for n in range(1, 11)]


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExtractor]:
    if not CORPUS.is_dir():
        pytest.fail(f"test corpus missing: expected it at {CORPUS}")
    extractor = ProcessPoolExtractor(workers=2, fault_engines=True)
    asyncio.run(extractor.start())
    try:
        yield extractor
    finally:
        asyncio.run(extractor.close())


def _extract(pool: ProcessPoolExtractor, pdf: bytes, **kw: str) -> ExtractionResult:
    return asyncio.run(pool.extract(pdf, ExtractOptions(**kw)))


# ----------------------------------------------------------------------------- quality


def test_born_digital_text_layer_is_exact(pool: ProcessPoolExtractor) -> None:
    gt = _ground_truth()
    pdf = _corpus_file(SYNTH / "born_digital.pdf")
    result = _extract(pool, pdf)
    assert [p.number for p in result.pages] == list(range(1, 11))
    for page, ref in zip(result.pages, gt, strict=True):
        assert page.source == "text_layer"
        assert page.confidence == 1.0
        assert cer(page.text, ref) == 0.0, f"page {page.number}"
        # one printed line per line, each with a box inside the A4 page
        assert len(page.lines) == len(ref.strip().splitlines())
        for line in page.lines:
            x0, y0, x1, y1 = line.bbox
            assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 850
    # the title sits near the top of the page (top-left origin)
    assert result.pages[0].lines[0].bbox[1] < 100


@pytest.mark.parametrize(("name", "limit"), [("scan_mild.pdf", 0.01), ("scan_hard.pdf", 0.02)])
def test_scans_are_ocred_within_cer_budget(pool: ProcessPoolExtractor, name: str, limit: float) -> None:
    gt = _ground_truth()
    pdf = _corpus_file(SYNTH / name)
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    result = asyncio.run(pool.extract(pdf, ExtractOptions(), progress))
    assert all(p.source == "ocr" for p in result.pages)
    assert all(p.zoom == 1.5 for p in result.pages)
    assert all(0.8 < p.confidence <= 1.0 for p in result.pages)
    value = corpus_cer((p.text, ref) for p, ref in zip(result.pages, gt, strict=True))
    assert value <= limit, f"{name}: CER {value:.4%} > {limit:.0%}"
    assert seen == [(n, 10) for n in range(1, 11)]
    # OCR boxes are in PDF points, like the text layer's
    x0, y0, x1, y1 = result.pages[0].lines[0].bbox
    assert 90 < x0 < x1 < 520 and 30 < y0 < y1 < 100


def test_text_mode_never_ocrs(pool: ProcessPoolExtractor) -> None:
    result = _extract(pool, _corpus_file(SYNTH / "scan_hard.pdf"), mode="text")
    assert len(result.pages) == 10
    assert all(p.source == "text_layer" and p.text == "" for p in result.pages)


def test_concurrent_documents_share_the_pool(pool: ProcessPoolExtractor) -> None:
    gt = _ground_truth()
    pdf = _corpus_file(SYNTH / "born_digital.pdf")
    enc = _corpus_file(BAD / "gen_encrypted_empty_user_password.pdf")

    async def both() -> list[ExtractionResult]:
        return list(
            await asyncio.gather(
                pool.extract(pdf, ExtractOptions()),
                pool.extract(enc, ExtractOptions(mode="ocr")),
                pool.extract(pdf, ExtractOptions()),
            )
        )

    first, ocr, second = asyncio.run(both())
    for result in (first, second):
        assert corpus_cer((p.text, r) for p, r in zip(result.pages, gt, strict=True)) == 0.0
    assert ocr.pages[0].source == "ocr"
    assert "Residência" in ocr.pages[0].text


def test_turned_pages_are_set_upright(pool: ProcessPoolExtractor) -> None:
    """cardinal.pdf: one page upright and turned 90/180/270 (compare by word recall)."""
    import re

    ref_words = set(re.findall(r"\w+", _corpus_file(CORPUS / "real" / "gt" / "linn_ocrmypdf_ref.txt").decode().lower()))
    result = _extract(pool, _corpus_file(CORPUS / "real" / "cardinal.pdf"))
    assert [p.rotation for p in result.pages] == [0, 270, 180, 90]
    for page in result.pages:
        words = set(re.findall(r"\w+", page.text.lower()))
        recall = len(words & ref_words) / len(ref_words)
        assert recall >= 0.9, f"page {page.number}: word recall {recall:.2f}"
        # boxes stay in the displayed page's coordinates (pages 2 and 4 are landscape)
        width = 792 if page.number in (2, 4) else 612
        assert all(0 <= ln.bbox[0] < ln.bbox[2] <= width + 1 for ln in page.lines)


# ----------------------------------------------------------------------------- hostile input


def test_password_protected_pdf_is_rejected(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(BAD / "gen_encrypted_user_password.pdf")
    with pytest.raises(EncryptedPdf):
        asyncio.run(pool.inspect(pdf))
    with pytest.raises(EncryptedPdf):
        _extract(pool, pdf)


def test_empty_user_password_pdf_is_processed(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(BAD / "gen_encrypted_empty_user_password.pdf")
    info = asyncio.run(pool.inspect(pdf))
    assert info.pages == 1 and info.encrypted
    result = _extract(pool, pdf)
    assert "Declaração de Residência nº 2.318/2025" in result.text


@pytest.mark.parametrize(
    "name", ["gen_truncated_10.pdf", "gen_one_byte.pdf", "gen_empty_0byte.pdf", "gen_wrong_magic_zip.pdf"]
)
def test_unreadable_pdf_is_corrupt(pool: ProcessPoolExtractor, name: str) -> None:
    with pytest.raises(CorruptPdf):
        _extract(pool, _corpus_file(BAD / name))


def test_garbage_bytes_are_corrupt(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(SYNTH / "born_digital.pdf")
    with pytest.raises(CorruptPdf):
        _extract(pool, b"%PDF-1.7\n" + bytes(range(256)) * 8)
    with pytest.raises(CorruptPdf):
        _extract(pool, pdf[: len(pdf) // 3])


def test_page_limit(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(BAD / "gen_many_pages.pdf")  # 20,000 pages
    with pytest.raises(TooManyPages):
        asyncio.run(pool.inspect(pdf))
    with pytest.raises(TooManyPages):
        _extract(pool, pdf)


def test_giant_page_is_rendered_within_pixel_budget(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(BAD / "gen_huge_mediabox.pdf")  # 200,000 pt square
    result = _extract(pool, pdf, mode="ocr")
    page = result.pages[0]
    assert page.source == "ocr"
    assert page.zoom is not None and page.zoom < 1.5
    side_px = 200_000 * page.zoom
    assert side_px <= 4_000.5 and side_px**2 <= 40_000_001


def test_unknown_engine_and_mode(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(SYNTH / "born_digital.pdf")
    with pytest.raises(UnknownEngine):
        _extract(pool, pdf, engine="no-such-engine")
    with pytest.raises(InvalidRequest):
        _extract(pool, pdf, mode="fast")
    assert "rapidocr" in pool.engines()


# ----------------------------------------------------------------------------- faults


def _wait_idle(pool: ProcessPoolExtractor) -> None:
    """No child outlives its job: after a failure nothing holds the document any more (a lane
    cancelled while its child was being forked ends that child as soon as the fork returns)."""
    deadline = time.monotonic() + 5
    while pool.child_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.child_pids() == []


def test_crashing_child_is_replaced(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(SYNTH / "born_digital.pdf")
    before = pool.restarts
    with pytest.raises(ResourceLimit):
        _extract(pool, pdf, engine="crash")  # the child SIGKILLs itself
    assert pool.restarts > before
    result = _extract(pool, pdf)
    assert len(result.pages) == 10 and "CONTRATO" in result.text
    _wait_idle(pool)


def test_memory_cap_kills_the_page(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(SYNTH / "born_digital.pdf")
    with pytest.raises(ResourceLimit):
        _extract(pool, pdf, engine="oom")  # allocates past RLIMIT_AS
    assert len(_extract(pool, pdf).pages) == 10
    _wait_idle(pool)


def test_hanging_child_times_out(pool: ProcessPoolExtractor) -> None:
    pdf = _corpus_file(SYNTH / "born_digital.pdf")
    saved = pool.page_timeout_s
    pool.page_timeout_s = 1.0
    try:
        start = time.monotonic()
        with pytest.raises(ExtractionTimeout):
            _extract(pool, pdf, engine="hang")
        assert time.monotonic() - start < 10
    finally:
        pool.page_timeout_s = saved
    assert len(_extract(pool, pdf).pages) == 10
    _wait_idle(pool)


# ----------------------------------------------------------------------------- active content


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gen_js_openaction.pdf", ["javascript"]),
        ("gen_launch_action.pdf", ["launch_action"]),
        ("gen_embedded_file.pdf", ["embedded_files"]),
    ],
)
def test_active_content_is_reported_and_the_text_still_extracted(
    pool: ProcessPoolExtractor, name: str, expected: list[str]
) -> None:
    result = _extract(pool, _corpus_file(BAD / name))
    assert result.active_content == expected
    assert "Declaração de Residência nº 2.318/2025" in result.text


def test_plain_documents_report_no_active_content(pool: ProcessPoolExtractor) -> None:
    assert _extract(pool, _corpus_file(SYNTH / "born_digital.pdf"), mode="text").active_content == []
