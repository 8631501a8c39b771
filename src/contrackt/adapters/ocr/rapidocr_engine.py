"""RapidOCR 3.x (PP-OCRv6 small, ONNX Runtime) and the row grouping of its boxes.

Runs inside a child process.  Models come from the rapidocr wheel (nothing is
downloaded); the angle classifier stays off (it flips good lines); ONNX Runtime
runs with one intra-op and one inter-op thread, since parallelism comes from
the pool's processes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BBox = tuple[float, float, float, float]

DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"


@dataclass
class OcrBox:
    """One detected text box: its quadrilateral (pixels), text and score."""

    quad: np.ndarray  # shape (4, 2): tl, tr, br, bl
    text: str
    score: float


@dataclass
class OcrLine:
    text: str
    confidence: float
    bbox: BBox  # pixels, top-left origin


def rapidocr_params(threads: int = 1) -> dict[str, Any]:
    """The exact RapidOCR configuration we run (config keys of rapidocr 3.10)."""
    import rapidocr

    models = Path(rapidocr.__file__).resolve().parent / "models"
    det, rec = models / DET_MODEL, models / REC_MODEL
    for path in (det, rec):
        if not path.is_file():
            raise RuntimeError(f"rapidocr model missing from the wheel: {path.name}")
    return {
        "Global.use_cls": False,
        "Global.log_level": "error",
        "Det.model_path": str(det),
        "Rec.model_path": str(rec),
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": threads,
    }


class RapidOcrEngine:
    """PP-OCRv6 small through rapidocr; one instance per child process."""

    name = "rapidocr"

    def __init__(self, threads: int = 1) -> None:
        from rapidocr import RapidOCR

        self._ocr: Any = RapidOCR(params=rapidocr_params(threads))

    def warm(self) -> None:
        """Load both models and run them once so the first page is not slow."""
        img = np.full((96, 320, 3), 255, dtype=np.uint8)
        img[40:56, 40:280] = 0
        self._ocr(img)
        # Detection on a blank image may skip recognition; load it explicitly.
        self._ocr._load_rec_model()

    def recognize(self, image: np.ndarray) -> list[OcrBox]:
        out = self._ocr(image, use_cls=False)
        boxes = getattr(out, "boxes", None)
        txts = getattr(out, "txts", None)
        scores = getattr(out, "scores", None)
        if boxes is None or txts is None or scores is None:
            return []
        result: list[OcrBox] = []
        for quad, text, score in zip(boxes, txts, scores, strict=False):
            text = str(text).strip()
            if text:
                result.append(OcrBox(np.asarray(quad, dtype=np.float64), text, float(score)))
        return result


# --------------------------------------------------------------------------- rows

_DEGREE_ORDINAL = re.compile(r"(?<=[0-9A-Za-z])°(?![CFK]\b)")


def fix_text(text: str) -> str:
    """Small, safe corrections of systematic recognition slips.

    PP-OCR reads the ordinal indicator (``nº``, ``3º``) as a degree sign;
    Portuguese documents use the ordinal far more often than degrees, so a
    degree sign glued to a letter or digit (and not a temperature unit) becomes º.
    """
    return _DEGREE_ORDINAL.sub("º", text)


@dataclass
class _Item:
    box: OcrBox
    x0: float
    x1: float
    yc: float  # deskewed centre
    h: float
    bounds: BBox


def _skew(boxes: list[OcrBox]) -> float:
    """Median slope of long boxes' top and bottom edges (radians)."""
    angles: list[float] = []
    for b in boxes:
        q = b.quad
        w = float(np.hypot(*(q[1] - q[0])))
        h = float(np.hypot(*(q[3] - q[0])))
        if h <= 0 or w < 3 * h:
            continue
        for a, c in ((q[0], q[1]), (q[3], q[2])):
            dx, dy = float(c[0] - a[0]), float(c[1] - a[1])
            if dx > 0:
                angles.append(math.atan2(dy, dx))
    if not angles:
        return 0.0
    angle = float(np.median(angles))
    return angle if abs(angle) < math.radians(10) else 0.0


def group_rows(boxes: list[OcrBox]) -> list[OcrLine]:
    """Regroup detected boxes into printed lines in reading order.

    Boxes whose (deskewed) vertical centres agree are one row, read left to
    right; rows go top to bottom.
    """
    if not boxes:
        return []
    angle = _skew(boxes)
    cos, sin = math.cos(-angle), math.sin(-angle)
    items: list[_Item] = []
    for b in boxes:
        q = b.quad
        xs, ys = q[:, 0], q[:, 1]
        # rotate into the deskewed frame
        rx = xs * cos - ys * sin
        ry = xs * sin + ys * cos
        h = float(np.hypot(*(q[3] - q[0])) + np.hypot(*(q[2] - q[1]))) / 2
        items.append(
            _Item(
                box=b,
                x0=float(rx.min()),
                x1=float(rx.max()),
                yc=float(ry.mean()),
                h=max(h, 1.0),
                bounds=(float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())),
            )
        )
    items.sort(key=lambda it: it.yc)
    rows: list[list[_Item]] = []
    for it in items:
        target: list[_Item] | None = None
        # only the last few rows can hold a box this low
        for row in reversed(rows[-4:]):
            ryc = sum(r.yc for r in row) / len(row)
            rh = sum(r.h for r in row) / len(row)
            if abs(it.yc - ryc) <= 0.5 * min(it.h, rh) and not any(
                min(it.x1, r.x1) - max(it.x0, r.x0) > 0.3 * min(it.x1 - it.x0, r.x1 - r.x0) for r in row
            ):
                target = row
                break
        if target is None:
            rows.append([it])
        else:
            target.append(it)
    rows.sort(key=lambda row: sum(r.yc for r in row) / len(row))
    lines: list[OcrLine] = []
    for row in rows:
        row.sort(key=lambda r: r.x0)
        text = " ".join(fix_text(r.box.text) for r in row)
        weight = sum(len(r.box.text) for r in row) or 1
        conf = sum(r.box.score * len(r.box.text) for r in row) / weight
        x0 = min(r.bounds[0] for r in row)
        y0 = min(r.bounds[1] for r in row)
        x1 = max(r.bounds[2] for r in row)
        y1 = max(r.bounds[3] for r in row)
        lines.append(OcrLine(text, conf, (x0, y0, x1, y1)))
    return lines
