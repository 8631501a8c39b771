"""The models behind the PP-OCR engines: where they come from, the Latin restriction, post-correction.

What a user would notice: the restricted recogniser reads a Portuguese page
exactly as the full multilingual one does (only faster), it can still write
every character of Portuguese text, the fast profile's models come from a
wheel and a missing one stops the engine loudly, and ``RS 1.234,56`` comes
out as ``R$ 1.234,56`` without touching Rio Grande do Sul.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contrackt.adapters.ocr.engines import (
    ModelMissing,
    available_engines,
    check_engine,
    rapidocr_models,
)
from contrackt.adapters.ocr.latin import keep_char, restrict_to_latin
from contrackt.adapters.ocr.rapidocr_engine import RapidOcrEngine, fix_text, group_rows
from helpers_cer import cer

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
SYNTH = CORPUS / "synthetic"

PORTUGUESE = "ãõçáéíóúâêôàüÃÕÇÁÉÍÓÚÂÊÔÀÜºª§°R$€–—“”"


def _page_image(name: str, index: int, zoom: float) -> np.ndarray:
    import pypdfium2 as pdfium

    path = SYNTH / name
    if not path.is_file():
        pytest.fail(f"test corpus missing: expected {path} (../shared/corpus from the repo)")
    page = pdfium.PdfDocument(str(path))[index]
    return np.ascontiguousarray(page.render(scale=zoom).to_numpy()[:, :, :3])


@pytest.mark.parametrize("engine", ["rapidocr", "rapidocr-fast"])
def test_latin_restriction_keeps_every_portuguese_character_and_drops_the_rest(engine: str) -> None:
    import onnx

    _, rec, keys = rapidocr_models(engine)
    data, kept = restrict_to_latin(rec, keys)
    assert all(ch in kept for ch in PORTUGUESE)
    assert all(keep_char(ch) for ch in kept)
    assert not any("\u4e00" <= ch <= "\u9fff" or "\u3040" <= ch <= "\u30ff" for ch in kept)
    assert 300 < len(kept) < 400
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["character"].split("\n") == kept
    # ONNX Runtime accepts it and scores blank + kept + space at every time step
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 48, 320), np.float32)})[0]
    assert out.shape[-1] == len(kept) + 2


def test_a_model_that_is_not_a_recogniser_is_refused() -> None:
    det, _, _ = rapidocr_models("rapidocr")
    with pytest.raises(ValueError, match="not a PP-OCR recogniser"):
        restrict_to_latin(det)


def test_the_restricted_recogniser_reads_a_page_like_the_full_one() -> None:
    det, rec, _ = rapidocr_models("rapidocr")
    full = RapidOcrEngine(det=det, rec=rec, latin=False)
    full.warm()
    latin = RapidOcrEngine(det=det, rec=rec)
    latin.warm()
    image = _page_image("scan_hard.pdf", 0, 1.5)
    a = full.recognize(image)
    b = latin.recognize(image)
    assert len(a) > 20 and len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert np.allclose(x.quad, y.quad)  # the same detector found the same lines
        if all(keep_char(ch) for ch in x.text):
            assert y.text == x.text  # exact wherever the full model answered in Latin script
        assert all(keep_char(ch) for ch in y.text)


def test_the_derived_model_does_not_outlive_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    det, rec, keys = rapidocr_models("rapidocr-fast")
    engine = RapidOcrEngine(det=det, rec=rec, rec_dict=keys, name="rapidocr-fast")
    assert list(tmp_path.iterdir()), "the restricted model is written to a private temp folder"
    engine.warm()
    assert not list(tmp_path.iterdir()), "and removed once the sessions hold it"
    ref = (SYNTH / "gt" / "page_01.txt").read_text(encoding="utf-8")
    text = "\n".join(line.text for line in group_rows(engine.recognize(_page_image("scan_mild.pdf", 0, 1.25))))
    assert cer(text, ref) < 0.02


def test_fast_profile_models_come_from_a_wheel_and_a_missing_one_is_loud(tmp_path: Path) -> None:
    det, rec, keys = rapidocr_models("rapidocr-fast")
    assert "site-packages" in str(det) and det.is_file() and rec.is_file()
    assert keys is not None and keys.is_file()
    assert "rapidocr-fast" in available_engines()
    with pytest.raises(ModelMissing, match=r"model file missing: .*tiny/det/det\.onnx"):
        check_engine("rapidocr-fast", str(tmp_path))
    assert "rapidocr-fast" not in available_engines({"rapidocr-fast": str(tmp_path)})


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("valor de RS 35.000,00 (trinta e cinco mil reais)", "valor de R$ 35.000,00 (trinta e cinco mil reais)"),
        ("total RS1.234,56", "total R$1.234,56"),
        ("Porto Alegre/RS 90.010-150", "Porto Alegre/RS 90.010-150"),  # the state, before a CEP
        ("Caxias do Sul - RS 12 vias", "Caxias do Sul - RS 12 vias"),
        ("contrato n° 12/2025, 3° andar", "contrato nº 12/2025, 3º andar"),
        ("temperatura de 25 °C", "temperatura de 25 °C"),
    ],
)
def test_post_correction(raw: str, fixed: str) -> None:
    assert fix_text(raw) == fixed
