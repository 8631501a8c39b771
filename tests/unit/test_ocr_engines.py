"""The OCR engines behind the port: selection, self-test, render policy, reading order.

One small pool (one worker child plus the inspect child) serves the pool tests;
each engine reads one scanned page (a few seconds each on a busy 2-core box).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contrackt.adapters.ocr.engines import (
    ENGINES,
    ModelMissing,
    available_engines,
    check_engine,
    load_engine,
)
from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.rapidocr_engine import OcrBox, group_rows
from contrackt.adapters.ocr.worker_child import ChildConfig, PageWorker
from contrackt.domain.errors import ContracktError, UnknownEngine
from contrackt.ports.extractor import ExtractOptions
from helpers_cer import cer

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
SYNTH = CORPUS / "synthetic"

# CER budget for one page of scan_mild (page 1: a contract, accents, CPF/CNPJ)
BUDGET = {"rapidocr": 0.01, "rapidocr-fast": 0.015, "tesseract": 0.03}


def _corpus_file(path: Path) -> bytes:
    if not CORPUS.is_dir():
        pytest.fail(f"test corpus missing: expected it at {CORPUS} (../shared/corpus from the repo)")
    if not path.is_file():
        pytest.fail(f"corpus file missing: {path}")
    return path.read_bytes()


def _one_page(name: str, index: int) -> bytes:
    import pypdfium2 as pdfium

    src = pdfium.PdfDocument(_corpus_file(SYNTH / name))
    out = pdfium.PdfDocument.new()
    out.import_pages(src, [index])
    import io

    buf = io.BytesIO()
    out.save(buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExtractor]:
    extractor = ProcessPoolExtractor(workers=1, engine="rapidocr", engines=["rapidocr-fast", "tesseract"])
    asyncio.run(extractor.start())
    try:
        yield extractor
    finally:
        asyncio.run(extractor.close())


# ----------------------------------------------------------------------------- registry


def test_every_engine_is_installed_and_listed_without_loading_models() -> None:
    assert available_engines() == ["rapidocr", "rapidocr-fast", "tesseract"]
    code = (
        "import sys\n"
        "from contrackt.adapters.ocr.engines import available_engines\n"
        "assert available_engines()\n"
        "heavy = [m for m in ('onnxruntime', 'rapidocr', 'tesserocr', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_self_test_fails_loudly_when_a_model_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="model file missing"):
        check_engine("rapidocr", str(tmp_path))
    with pytest.raises(ModelMissing, match=r"por\.traineddata"):
        load_engine("tesseract", str(tmp_path))
    assert "rapidocr" not in available_engines({"rapidocr": str(tmp_path)})
    broken = ProcessPoolExtractor(workers=1, model_dirs={"rapidocr": str(tmp_path)})
    with pytest.raises(ContracktError, match=r"OCR self-test failed.*PP-OCRv6_det_small\.onnx"):
        asyncio.run(broken.start())
    asyncio.run(broken.close())


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(UnknownEngine):
        ProcessPoolExtractor(workers=1, engine="no-such-engine")
    with pytest.raises(UnknownEngine):
        ProcessPoolExtractor(workers=1, engines=["rapidocr", "nope"])


# ----------------------------------------------------------------------------- through the pool


def test_each_engine_reads_a_scanned_page_chosen_per_request(pool: ProcessPoolExtractor) -> None:
    assert pool.engines() == ["rapidocr", "rapidocr-fast", "tesseract"]
    ref = _corpus_file(SYNTH / "gt" / "page_01.txt").decode("utf-8")
    pdf = _one_page("scan_mild.pdf", 0)
    for engine in ("rapidocr", "rapidocr-fast", "tesseract", None):
        result = asyncio.run(pool.extract(pdf, ExtractOptions(engine=engine)))
        name = engine or "rapidocr"
        page = result.pages[0]
        assert result.engine == name
        assert page.source == "ocr"
        # the engine's render policy is reported per page
        assert page.zoom in (ENGINES[name].zoom, ENGINES[name].retry_zoom)
        value = cer(page.text, ref)
        assert value <= BUDGET[name], f"{name}: CER {value:.2%}"
        x0, y0, x1, y1 = page.lines[0].bbox  # PDF points, top-left origin
        assert 60 < x0 < x1 < 560 and 20 < y0 < y1 < 120
        # word boxes: every OCR line carries its words, in reading order, inside the line's box
        assert all(ln.words for ln in page.lines), name
        for ln in page.lines:
            assert " ".join(w.text for w in ln.words) == ln.text
            lx0, ly0, lx1, ly1 = ln.bbox
            for w in ln.words:
                wx0, wy0, wx1, wy1 = w.bbox
                assert lx0 - 2 <= wx0 < wx1 <= lx1 + 2 and ly0 - 4 <= wy0 < wy1 <= ly1 + 4, (name, w, ln.bbox)
                assert 0.0 <= w.confidence <= 1.0
            lefts = [w.bbox[0] for w in ln.words]
            assert lefts == sorted(lefts), (name, ln.text)
        cpf = [w for ln in page.lines for w in ln.words if re.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2},?", w.text)]
        assert cpf, f"{name}: no CPF read as one word"
        assert "words" in page.lines[0].to_dict()


def test_unknown_engine_per_request(pool: ProcessPoolExtractor) -> None:
    with pytest.raises(UnknownEngine):
        asyncio.run(pool.extract(_one_page("scan_mild.pdf", 0), ExtractOptions(engine="paddle")))


# ----------------------------------------------------------------------------- in-process


class _NoOcr:
    name = "rapidocr"

    def recognize(self, image: Any) -> list[OcrBox]:
        raise AssertionError("mode=text must never OCR")


def test_text_mode_never_ocrs_and_auto_does_on_a_scan() -> None:
    def worker_for(pdf: bytes) -> PageWorker:
        worker = PageWorker(ChildConfig(engine="rapidocr", orientation=False))
        worker.loaded["rapidocr"] = _NoOcr()
        worker.open(pdf)
        return worker

    scan = worker_for(_corpus_file(SYNTH / "scan_hard.pdf"))
    for index in range(10):
        page = scan.page(index, "text", "rapidocr")
        assert page["source"] == "text_layer" and page["text"] == ""
    with pytest.raises(AssertionError, match="never OCR"):
        scan.page(0, "auto", "rapidocr")
    born = worker_for(_corpus_file(SYNTH / "born_digital.pdf"))
    page = born.page(0, "auto", "rapidocr")
    assert page["source"] == "text_layer" and page["zoom"] is None
    # text-layer lines carry their words too (issue 12: markdown tables need the columns), each
    # with its box inside the line's and the confidence of a text layer
    assert page["lines"]
    for line in page["lines"]:
        assert " ".join(w["text"] for w in line["words"]) == " ".join(line["text"].split())
        x0, y0, x1, y1 = line["bbox"]
        for w in line["words"]:
            assert w["confidence"] == 1.0
            assert (
                x0 - 0.5 <= w["bbox"][0] < w["bbox"][2] <= x1 + 0.5
                and y0 - 0.5 <= w["bbox"][1] <= w["bbox"][3] <= y1 + 0.5
            )


def _box(x0: float, y0: float, x1: float, y1: float, text: str) -> OcrBox:
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    return OcrBox(quad, text, 0.99)


def test_two_text_columns_are_read_column_by_column() -> None:
    boxes = [_box(100, 20, 900, 50, "Titulo do documento")]
    for i in range(6):
        y = 80 + 30 * i
        boxes.append(_box(100, y, 480, y + 20, f"esquerda linha {i} com bastante texto corrido"))
        boxes.append(_box(510, y, 900, y + 20, f"direita linha {i} com bastante texto corrido"))
    boxes.append(_box(100, 300, 900, 320, "Rodape de largura inteira"))
    texts = [ln.text for ln in group_rows(boxes)]
    assert texts[0] == "Titulo do documento"
    assert texts[1:7] == [f"esquerda linha {i} com bastante texto corrido" for i in range(6)]
    assert texts[7:13] == [f"direita linha {i} com bastante texto corrido" for i in range(6)]
    assert texts[-1] == "Rodape de largura inteira"
    # without column detection the same boxes read across
    assert group_rows(boxes, columns=False)[1].text.startswith("esquerda linha 0")
    assert "direita linha 0" in group_rows(boxes, columns=False)[1].text


def test_tables_still_read_row_by_row() -> None:
    boxes = []
    for i in range(6):
        y = 80 + 30 * i
        boxes.append(_box(100, y, 460, y + 20, f"00{i} Consultoria tributaria item {i}"))
        boxes.append(_box(600, y, 640, y + 20, str(i + 1)))
        boxes.append(_box(700, y, 800, y + 20, f"R$ {i + 1}.250,00"))
    lines = group_rows(boxes)
    assert [ln.text for ln in lines] == [
        f"00{i} Consultoria tributaria item {i} {i + 1} R$ {i + 1}.250,00" for i in range(6)
    ]
