"""Fax cleanup (ADR 0017 §6): streaks and specks go, letters stay, and only faxes at their resolution are touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contrackt.adapters.ocr.cleanup import clean_fax, cleaned, is_fax
from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.resolution import Native

FAX = Native(204, 98, bilevel=True)


def _page() -> tuple[np.ndarray, np.ndarray]:
    """A white 600 x 400 page with two lines of text, a streak down it and 200 one-pixel specks;
    (the page, the mask of the text's black pixels)."""
    import cv2

    text = np.full((600, 400), 255, np.uint8)
    cv2.putText(text, "Contrato 1.234,56", (20, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2)
    cv2.putText(text, "clausula i: prazo", (20, 200), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2)
    strokes = text < 128
    page = text.copy()
    page[:, 301:303] = 0  # a streak from a dirty scanner bar
    rng = np.random.default_rng(5)
    ys, xs = rng.integers(250, 590, 200), rng.integers(0, 290, 200)
    page[ys, xs] = 0
    return np.repeat(page[:, :, None], 3, axis=2), strokes


def test_streaks_and_specks_are_whitened_and_the_letters_kept() -> None:
    page, strokes = _page()
    out = clean_fax(page)[:, :, 0]
    assert out.shape == page.shape[:2]
    assert (out[:, 301:303] == 255).mean() > 0.97, "the streak is still there"
    noise = (page[:, :, 0] < 128) & ~strokes
    noise[:, 301:303] = False
    assert (out[noise] == 255).mean() > 0.95, "specks are still there"
    assert (out[strokes] < 128).mean() > 0.99, "letters lost pixels"


def test_only_faxes_at_their_resolution_are_cleaned() -> None:
    page, _ = _page()
    calls: list[float] = []

    def render(zoom: float) -> np.ndarray:
        calls.append(zoom)
        return page

    assert is_fax(FAX) and not is_fax(Native(300, 300, bilevel=True)) and not is_fax(Native(200, 200))
    assert not is_fax(None)
    assert cleaned(render, Native(300, 300)) is render  # a grey office scan: untouched
    draw = cleaned(render, FAX)
    assert draw(FAX.zoom)[:, 301, 0].min() == 255  # at the fax's resolution: cleaned
    # below it (the fast engine's zoom), strokes are thinner than a fax pixel: untouched
    assert draw(0.7 * FAX.zoom)[:, 301, 0].max() == 0
    assert calls == [FAX.zoom, 0.7 * FAX.zoom]


def test_the_setting_reaches_the_children_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from contrackt.bootstrap_ocr import make_extractor
    from contrackt.settings import Settings

    for value, expected in (("false", False), ("true", True)):
        monkeypatch.setenv("CONTRACKT_OCR_FAX_CLEANUP", value)
        pool = make_extractor(Settings(home=str(tmp_path)), preload=False)
        assert isinstance(pool, ProcessPoolExtractor)
        assert pool._config.fax_cleanup is expected
    monkeypatch.delenv("CONTRACKT_OCR_FAX_CLEANUP")
    assert Settings(home=str(tmp_path)).ocr_fax_cleanup


def _worn_fax_pdf(ink_below: int = 150) -> bytes:
    """Page 1 of scan_mild as a worn 204 x 98 dpi fax: streaks down it, 0.5 % of pixels flipped;
    grey under ``ink_below`` turns black (lower: fainter, thinner strokes)."""
    import io

    import pypdfium2 as pdfium
    from PIL import Image

    from tests.conftest import corpus_path

    page = pdfium.PdfDocument(corpus_path("synthetic", "scan_mild.pdf"))[0]
    width, height = page.get_size()
    grey = page.render(scale=204 / 72, grayscale=True).to_pil().convert("L")
    grey = grey.resize((round(width * 204 / 72), round(height * 98 / 72)), Image.Resampling.LANCZOS)
    black = np.asarray(grey) < ink_below
    rng = np.random.default_rng(11)
    black ^= rng.random(black.shape) < 0.005
    for x in (210, 655, 1020):
        black[:, x : x + 2] = True
    out = io.BytesIO()
    Image.fromarray(~black).convert("1").save(out, "PDF", dpi=(204, 98))
    return out.getvalue()


def test_a_worn_fax_reads_better_cleaned_through_the_pool() -> None:
    import asyncio

    from contrackt.ports.extractor import ExtractOptions
    from tests.conftest import corpus_path
    from tests.helpers_cer import cer, word_recall

    pdf = _worn_fax_pdf()
    ref = corpus_path("synthetic", "gt", "page_01.txt").read_text("utf-8")
    texts = {}
    for on in (False, True):
        pool = ProcessPoolExtractor(workers=1, engine="rapidocr", engines=[], fax_cleanup=on)
        asyncio.run(pool.start())
        try:
            texts[on] = asyncio.run(pool.extract(pdf, ExtractOptions())).pages[0].text
        finally:
            asyncio.run(pool.close())
    before, after = cer(texts[False], ref), cer(texts[True], ref)
    recall_before, recall_after = word_recall(texts[False], ref), word_recall(texts[True], ref)
    print(f"worn fax: CER {before:.2%} -> {after:.2%}, word recall {recall_before:.2%} -> {recall_after:.2%}")
    assert after < before
    assert recall_after >= recall_before
    assert after <= 0.02, f"CER {after:.2%}"


def test_the_fast_profile_reads_a_fax_at_its_resolution_only_when_cleaning_it() -> None:
    import asyncio

    from contrackt.ports.extractor import ExtractOptions

    pdf = _worn_fax_pdf()
    zooms = {}
    for on in (False, True):
        pool = ProcessPoolExtractor(workers=1, engine="rapidocr-fast", engines=[], fax_cleanup=on)
        asyncio.run(pool.start())
        try:
            page = asyncio.run(pool.extract(pdf, ExtractOptions())).pages[0]
        finally:
            asyncio.run(pool.close())
        assert page.source == "ocr" and page.zoom is not None
        zooms[on] = page.zoom
    assert zooms[True] >= round(FAX.zoom, 4) > zooms[False]
