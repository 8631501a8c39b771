"""The adaptive render scale: the rules of ``resolution.py`` (pure), the native resolution read
from real PDFs, and one scanned page through the real pool with it on."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contrackt.adapters.ocr.engines import ENGINES
from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.resolution import (
    MAX_ZOOM,
    MIN_ZOOM,
    Native,
    choose_zoom,
    page_native,
    reread_zoom,
)
from contrackt.ports.extractor import ExtractOptions
from helpers_cer import cer

ROOT = Path(__file__).resolve().parents[2]
SYNTH = ROOT.parent / "shared" / "corpus" / "synthetic"
DEFAULT = ENGINES["rapidocr"].zoom
BOX = ENGINES["rapidocr"].box_px


def test_unknown_resolution_keeps_the_engine_zoom() -> None:
    assert choose_zoom(DEFAULT, None) == DEFAULT
    assert choose_zoom(DEFAULT, None, text_pt=4.0, box_px=BOX) == DEFAULT
    assert reread_zoom(DEFAULT, DEFAULT, None, 4.0, BOX) is None
    assert choose_zoom(1.25, Native(float("nan"), 300)) == 1.25


def test_small_print_on_a_150_dpi_scan_is_scaled_up_more_than_on_a_400_dpi_one() -> None:
    small_print_pt = 8.0  # detected box height of 5-6 pt type
    low = choose_zoom(DEFAULT, Native(150, 150), small_print_pt, BOX)
    high = choose_zoom(DEFAULT, Native(400, 400), small_print_pt, BOX)
    # both enlarged past the engine's zoom; the 150 dpi scan up to its own resolution only
    assert DEFAULT < low <= 150 / 72 < high
    # relative to what was scanned, the 150 dpi page is scaled up more, the 400 dpi one down
    assert low * 72 / 150 > high * 72 / 400
    assert high * 72 < 400


def test_normal_text_is_not_read_twice_and_huge_print_is_read_smaller() -> None:
    body_pt = BOX / DEFAULT  # what the engine reads best at its own zoom
    assert reread_zoom(DEFAULT, DEFAULT, Native(300, 300), body_pt, BOX) is None
    assert reread_zoom(DEFAULT, DEFAULT, Native(300, 300), body_pt * 1.1, BOX) is None
    smaller = reread_zoom(DEFAULT, DEFAULT, Native(300, 300), 40.0, BOX)
    assert smaller is not None and MIN_ZOOM <= smaller < DEFAULT
    larger = reread_zoom(DEFAULT, DEFAULT, Native(300, 300), 8.0, BOX)
    assert larger is not None and larger > DEFAULT


def test_a_fax_is_never_rendered_below_its_native_resolution() -> None:
    for fax in (Native(204, 98, bilevel=True), Native(204, 196, bilevel=True)):
        assert choose_zoom(DEFAULT, fax) >= 204 / 72
        # not even when its text is huge
        assert choose_zoom(DEFAULT, fax, text_pt=200.0, box_px=BOX) >= 204 / 72
        assert choose_zoom(1.0, fax, text_pt=2.0, box_px=BOX) >= 204 / 72
    # an engine that reads faxes worse at their resolution (the fast profile) opts out
    assert choose_zoom(1.25, Native(204, 98, bilevel=True), fax_floor=False) == 1.25
    assert ENGINES["rapidocr"].fax_floor and not ENGINES["rapidocr-fast"].fax_floor
    assert ENGINES["rapidocr-fast"].fax_floor_cleaned  # with fax cleanup on (ADR 0017 §6)
    # a grey 200 dpi scan has no such floor
    assert choose_zoom(DEFAULT, Native(204, 196), text_pt=200.0, box_px=BOX) == MIN_ZOOM
    # nor a 1-bit 300 dpi office scan (rendered at the engine's zoom, as before)
    assert choose_zoom(DEFAULT, Native(300, 300, bilevel=True)) == DEFAULT


def test_clamps_hold() -> None:
    native = Native(1200, 1200)
    assert choose_zoom(DEFAULT, native, text_pt=0.5, box_px=BOX) == MAX_ZOOM
    assert choose_zoom(DEFAULT, native, text_pt=500.0, box_px=BOX) == MIN_ZOOM
    assert choose_zoom(DEFAULT, native, text_pt=0.0, box_px=BOX) == DEFAULT


def _pdf_page(name: str, index: int) -> object:
    import pypdfium2 as pdfium

    path = SYNTH / name
    if not path.is_file():
        pytest.fail(f"corpus file missing: {path} (../shared/corpus from the repo)")
    return pdfium.PdfDocument(str(path))[index]


def test_native_resolution_is_read_from_the_page() -> None:
    hard = page_native(_pdf_page("scan_hard.pdf", 0))
    assert hard is not None and (round(hard.xdpi), round(hard.ydpi), hard.bilevel) == (150, 150, False)
    mild = page_native(_pdf_page("scan_mild.pdf", 0))
    assert mild is not None and (round(mild.xdpi), round(mild.ydpi)) == (200, 200)
    assert page_native(_pdf_page("born_digital.pdf", 0)) is None  # no scan on it


def _fax_pdf() -> bytes:
    """Page 1 of scan_mild as a 1-bit 204 x 98 dpi fax (the standard resolution)."""
    import numpy as np
    from PIL import Image

    page = _pdf_page("scan_mild.pdf", 0)
    width, height = page.get_size()  # type: ignore[attr-defined]
    grey = page.render(scale=204 / 72, grayscale=True).to_pil().convert("L")  # type: ignore[attr-defined]
    grey = grey.resize((round(width * 204 / 72), round(height * 98 / 72)), Image.Resampling.LANCZOS)
    fax = Image.fromarray(np.asarray(grey) >= 150).convert("1")
    out = io.BytesIO()
    fax.save(out, "PDF", dpi=(204, 98))
    return out.getvalue()


def test_a_fax_reads_through_the_pool_with_the_adaptive_scale() -> None:
    import pypdfium2 as pdfium

    pdf = _fax_pdf()
    native = page_native(pdfium.PdfDocument(pdf)[0])
    assert native is not None and native.bilevel and (round(native.xdpi), round(native.ydpi)) == (204, 98)
    ref = (SYNTH / "gt" / "page_01.txt").read_text("utf-8")
    pool = ProcessPoolExtractor(workers=1, engine="rapidocr", engines=[])
    asyncio.run(pool.start())
    try:
        page = asyncio.run(pool.extract(pdf, ExtractOptions())).pages[0]
    finally:
        asyncio.run(pool.close())
    assert page.source == "ocr"
    assert page.zoom is not None and page.zoom >= round(204 / 72, 4)  # not below the fax's resolution
    value = cer(page.text, ref)
    assert value <= 0.02, f"CER {value:.2%}"
    x0, y0, x1, y1 = page.lines[0].bbox  # boxes still in PDF points
    assert 60 < x0 < x1 < 560 and 20 < y0 < y1 < 120


def test_the_setting_reaches_the_children_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from contrackt.bootstrap_ocr import make_extractor
    from contrackt.settings import Settings

    for value, expected in (("false", False), ("true", True)):
        monkeypatch.setenv("CONTRACKT_OCR_ADAPTIVE_SCALE", value)
        pool = make_extractor(Settings(home=str(tmp_path)), preload=False)
        assert isinstance(pool, ProcessPoolExtractor)
        assert pool._config.adaptive_scale is expected
    monkeypatch.delenv("CONTRACKT_OCR_ADAPTIVE_SCALE")
    assert Settings(home=str(tmp_path)).ocr_adaptive_scale  # on unless turned off (ADR 0017 §5)
