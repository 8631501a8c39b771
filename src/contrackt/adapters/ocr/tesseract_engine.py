"""Tesseract 5 (LSTM) through tesserocr, with Debian's ``tesseract-ocr-por`` data.

Runs inside a child process, which has set ``OMP_THREAD_LIMIT=1`` before this
module is imported (otherwise Tesseract's OpenMP threads oversubscribe the
CPU: about 5x slower on 2 cores).  The page image goes in as 8-bit grey
through ``SetImageBytes`` (no PIL round trip); text lines come back with their
boxes and confidence and are regrouped into rows like every other engine's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from contrackt.adapters.ocr.rapidocr_engine import OcrBox, Word


class TesseractEngine:
    name = "tesseract"

    def __init__(self, tessdata: str, lang: str = "por") -> None:
        import tesserocr

        self._t = tesserocr
        # tesserocr wants the folder that holds the .traineddata files
        self._api: Any = tesserocr.PyTessBaseAPI(
            path=tessdata.rstrip("/") + "/",
            lang=lang,
            psm=tesserocr.PSM.AUTO,
            oem=tesserocr.OEM.LSTM_ONLY,
        )

    def warm(self) -> None:
        img = np.full((80, 400, 3), 255, dtype=np.uint8)
        img[30:50, 40:360] = 0
        self.recognize(img)

    def recognize(self, image: np.ndarray) -> list[OcrBox]:
        grey = image if image.ndim == 2 else _to_grey(image)
        grey = np.ascontiguousarray(grey, dtype=np.uint8)
        h, w = grey.shape
        api = self._api
        api.SetImageBytes(grey.tobytes(), w, h, 1, w)
        api.Recognize()
        line_level, word_level = self._t.RIL.TEXTLINE, self._t.RIL.WORD
        it = api.GetIterator()
        boxes: list[OcrBox] = []
        if it is None:
            return boxes
        line: tuple[tuple[float, ...], float, list[Word]] | None = None
        while True:
            if line is None or it.IsAtBeginningOf(line_level):
                _flush(line, boxes)
                bbox = it.BoundingBox(line_level)
                line = (tuple(float(v) for v in bbox) if bbox else (0.0, 0.0, 0.0, 0.0), it.Confidence(line_level), [])
            try:
                text = " ".join((it.GetUTF8Text(word_level) or "").split())
            except RuntimeError:  # an empty word (tesserocr raises "No text returned")
                text = ""
            bbox = it.BoundingBox(word_level) if text else None
            if text and bbox is not None:
                x0, y0, x1, y1 = (float(v) for v in bbox)
                line[2].append((text, float(it.Confidence(word_level)) / 100.0, (x0, y0, x1, y1)))
            if not it.Next(word_level):
                break
        _flush(line, boxes)
        api.Clear()
        return boxes


def _flush(line: tuple[tuple[float, ...], float, list[Word]] | None, boxes: list[OcrBox]) -> None:
    """Append one Tesseract text line (its words joined by single spaces) if it has any."""
    if line is None or not line[2]:
        return
    (x0, y0, x1, y1), conf, words = line
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    boxes.append(OcrBox(quad, " ".join(w[0] for w in words), float(conf) / 100.0, words))


def _to_grey(image: np.ndarray) -> np.ndarray:
    """Luma of a BGR image (PDFium renders BGR)."""
    bgr = image[:, :, :3].astype(np.uint16)
    grey: np.ndarray = ((bgr[:, :, 0] * 29 + bgr[:, :, 1] * 150 + bgr[:, :, 2] * 77) >> 8).astype(np.uint8)
    return grey
