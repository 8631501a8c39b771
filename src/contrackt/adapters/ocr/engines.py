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
    package: str  # import name that must be installed
    zoom: float  # first render (PDF points -> pixels)
    retry_zoom: float | None  # re-render at this zoom when confidence is low ...
    retry_below: float  # ... i.e. below this page confidence
    description: str
    models: str  # engines with the same ``models`` share one loaded instance in a child


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            name="rapidocr",
            package="rapidocr",
            zoom=1.5,
            # Measured: re-rendering scan_hard's least confident pages at 2x
            # did not lower CER (bench/README.md, "adaptive zoom").
            retry_zoom=None,
            retry_below=0.0,
            description="PP-OCRv6 small (det + rec) through rapidocr/ONNX Runtime, angle classifier off",
            models="pp-ocrv6-small",
        ),
        EngineSpec(
            name="rapidocr-fast",
            package="rapidocr",
            zoom=1.0,
            retry_zoom=None,
            retry_below=0.0,
            description="the same PP-OCRv6 small models on a 1x render",
            models="pp-ocrv6-small",
        ),
        EngineSpec(
            name="tesseract",
            package="tesserocr",
            zoom=2.0,
            retry_zoom=None,
            retry_below=0.0,
            description="Tesseract 5 LSTM, Portuguese (tesserocr + Debian tesseract-ocr-por)",
            models="tesseract-por",
        ),
    )
}


# ----------------------------------------------------------------------------- model files


def rapidocr_model_dir(model_dir: str | None = None) -> Path:
    """The folder holding the PP-OCRv6 ONNX files (the rapidocr wheel's, unless overridden)."""
    if model_dir:
        return Path(model_dir)
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise ModelMissing("the rapidocr package is not installed")
    return Path(spec.origin).resolve().parent / "models"


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
        folder = rapidocr_model_dir(model_dir)
        return [folder / DET_MODEL, folder / REC_MODEL]
    if name == "tesseract":
        return [tessdata_dir(model_dir) / f"{TESSERACT_LANG}.traineddata"]
    raise ModelMissing(f"unknown OCR engine {name!r}")


def check_engine(name: str, model_dir: str | None = None) -> None:
    """Raise ``ModelMissing`` (naming what is missing) unless ``name`` can load."""
    spec = ENGINES.get(name)
    if spec is None:
        raise ModelMissing(f"unknown OCR engine {name!r}")
    if importlib.util.find_spec(spec.package) is None:
        raise ModelMissing(f"OCR engine {name}: the Python package {spec.package!r} is not installed")
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


def load_engine(name: str, model_dir: str | None = None) -> Engine:
    """Build ``name`` and run it once on a small synthetic image (self-test)."""
    check_engine(name, model_dir)
    engine: Engine
    if name in ("rapidocr", "rapidocr-fast"):
        from contrackt.adapters.ocr.rapidocr_engine import RapidOcrEngine

        engine = RapidOcrEngine(threads=1, model_dir=str(rapidocr_model_dir(model_dir)), name=name)
    elif name == "tesseract":
        from contrackt.adapters.ocr.tesseract_engine import TesseractEngine

        engine = TesseractEngine(str(tessdata_dir(model_dir)), TESSERACT_LANG)
    else:  # pragma: no cover - check_engine refused it already
        raise ModelMissing(f"unknown OCR engine {name!r}")
    engine.warm()
    return engine
