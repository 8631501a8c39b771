"""The fast profile's unsure lines read again by the default engine's recogniser (ADR 0017 §7).

What a user of the fast profile would notice: words lost on a worn fax that the default engine
would have read, paid for only on the lines the tiny model is unsure of; the confident lines
and the default engine untouched; the setting doing what it says.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from contrackt.adapters.ocr.engines import ENGINES, load_engine
from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.rapidocr_engine import OcrBox
from contrackt.ports.extractor import ExtractOptions
from tests.conftest import corpus_path
from tests.helpers_cer import cer, word_recall
from tests.unit.test_ocr_cleanup import _worn_fax_pdf


class _Helper:
    """Counts what it is asked to read; reads every crop as ``text`` with ``score``."""

    def __init__(self, text: str, score: float) -> None:
        self.crops = 0
        outer = self

        class _Rec:
            def __call__(self, args: object) -> object:
                from rapidocr.ch_ppocr_rec.typings import TextRecOutput, WordInfo

                imgs = list(args.img)  # type: ignore[attr-defined]
                outer.crops += len(imgs)
                info = WordInfo(words=[[text]], word_cols=[list(range(len(text)))], confs=[score] * len(text))
                info.line_txt_len = float(len(text) + 1)
                return TextRecOutput(
                    imgs=imgs, txts=(text,) * len(imgs), scores=[score] * len(imgs), word_results=(info,) * len(imgs)
                )

        class _Ocr:
            text_rec = _Rec()

        self._ocr = _Ocr()


def _boxes() -> tuple[np.ndarray, list[OcrBox]]:
    image = np.full((80, 300, 3), 255, dtype=np.uint8)
    image[15:30, 20:280] = 0
    image[50:65, 20:280] = 0
    sure = OcrBox(np.array([[10.0, 10.0], [290.0, 10.0], [290.0, 35.0], [10.0, 35.0]]), "certo", 0.99)
    unsure = OcrBox(np.array([[10.0, 45.0], [290.0, 45.0], [290.0, 70.0], [10.0, 70.0]]), "dúvida", 0.60)
    return image, [sure, unsure]


def test_only_unsure_lines_are_read_again_and_the_better_reading_stays() -> None:
    engine = load_engine("rapidocr-fast")
    image, boxes = _boxes()
    better = _Helper("lido", 0.93)
    out = engine.reread(image, boxes, 0.95, better)  # type: ignore[attr-defined]
    assert better.crops == 1, "a confident line was read again"
    assert out[0] is boxes[0]
    assert (out[1].text, out[1].score) == ("lido", 0.93)
    assert [w[0] for w in out[1].words] == ["lido"]
    worse = _Helper("pior", 0.40)
    assert engine.reread(image, boxes, 0.95, worse)[1] is boxes[1]  # type: ignore[attr-defined]
    sure = _Helper("x", 1.0)
    assert engine.reread(image, boxes, 0.5, sure) == boxes and sure.crops == 0  # type: ignore[attr-defined]


def test_only_the_fast_profile_has_a_helper() -> None:
    assert ENGINES["rapidocr-fast"].reread_with == "rapidocr"
    assert ENGINES["rapidocr"].reread_with is None and ENGINES["tesseract"].reread_with is None


def _read_fast(pdf: bytes, reread: str, pages: tuple[int, ...] | None = None) -> list[str]:
    pool = ProcessPoolExtractor(workers=1, engine="rapidocr-fast", engines=[], line_reread=reread)
    asyncio.run(pool.start())
    try:
        return [p.text for p in asyncio.run(pool.extract(pdf, ExtractOptions(pages=pages))).pages]
    finally:
        asyncio.run(pool.close())


def test_a_faded_fax_read_by_the_fast_profile_gains_the_words_it_was_unsure_of() -> None:
    """Through the real pool, the product's default (``fax``) against ``off``: a fax whose strokes
    came out thin (about half its lines unsure)."""
    pdf = _worn_fax_pdf(ink_below=110)
    ref = corpus_path("synthetic", "gt", "page_01.txt").read_text("utf-8")
    (alone,), (helped,) = _read_fast(pdf, "off"), _read_fast(pdf, "fax")
    before, after = word_recall(alone, ref), word_recall(helped, ref)
    cer_before, cer_after = cer(alone, ref), cer(helped, ref)
    print(f"faded fax, fast profile: word recall {before:.2%} -> {after:.2%}, CER {cer_before:.2%} -> {cer_after:.2%}")
    assert after >= before + 0.03, f"re-reading gained {after - before:.2%} of the words"
    assert cer_after < cer_before


def test_scans_keep_the_fast_reading_unless_asked_and_then_only_their_hard_pages() -> None:
    """scan_hard pages 1 and 4 (unsure lines: about one in eight, and seven in ten). ``fax``
    (the default) leaves scans alone, so the fast profile keeps its speed there; ``all`` reads
    page 4's unsure lines again and leaves page 1, under the page share, as it was."""
    pdf = corpus_path("synthetic", "scan_hard.pdf").read_bytes()
    refs = [corpus_path("synthetic", "gt", f"page_{n:02d}.txt").read_text("utf-8") for n in (1, 4)]
    off, fax, every = (_read_fast(pdf, mode, (1, 4)) for mode in ("off", "fax", "all"))
    assert fax == off
    assert every[0] == off[0]
    before, after = word_recall(off[1], refs[1]), word_recall(every[1], refs[1])
    print(f"scan_hard page 4, fast profile: word recall {before:.2%} -> {after:.2%}")
    assert after > before


def test_the_setting_reaches_the_children_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from contrackt.bootstrap_ocr import make_extractor
    from contrackt.settings import Settings

    for value in ("off", "all", "fax"):
        monkeypatch.setenv("CONTRACKT_OCR_LINE_REREAD", value)
        pool = make_extractor(Settings(home=str(tmp_path)), preload=False)
        assert isinstance(pool, ProcessPoolExtractor)
        assert pool._config.line_reread == value
    monkeypatch.delenv("CONTRACKT_OCR_LINE_REREAD")
    assert Settings(home=str(tmp_path)).ocr_line_reread == "fax"
