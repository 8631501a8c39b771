"""Preprocessing tried on phone photos and faxes before it was kept or dropped (ADR 0017 §6).

Each variant transforms the rendered page inside the product's page path (``PageWorker._ocr_policy``:
adaptive scale, orientation, the engine, rows) for the 3 pages of a ``bench/ocr/rescan.py`` set;
prints word recall and CER against ``synthetic/gt``. Fax cleanup itself is off here unless
``--cleanup`` (so ``none`` is the raw page); ``--fax-floor`` gives the engine the fax floor.

    .venv/bin/python -m bench.ocr.preprocess --set phone_hard --variants none,light,sheet,both
    .venv/bin/python -m bench.ocr.preprocess --set fax_noisy --variants none,destreak,despeckle,fax
    .venv/bin/python -m bench.ocr.preprocess --set fax_noisy --engine rapidocr-fast --fax-floor [--cleanup]

Variants: ``light`` divides by the page's background (a closed, blurred copy); ``sheet`` finds the
sheet (largest 4-corner contour) and unwarps it; ``both``; ``destreak`` / ``despeckle`` / ``fax``
are the two halves of ``cleanup.clean_fax`` and the whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "src", ROOT, ROOT / "tests"):
    sys.path.insert(0, str(_p))


def _grey(img: Any) -> Any:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _bgr(grey: Any) -> Any:
    import cv2

    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def flatten_light(img: Any) -> Any:
    import cv2
    import numpy as np

    grey = _grey(img)
    h, w = grey.shape
    small = cv2.resize(grey, (w // 8, h // 8), interpolation=cv2.INTER_AREA)
    k = max(3, (min(small.shape) // 25) | 1)
    bg = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    bg = cv2.resize(cv2.GaussianBlur(bg, (0, 0), k / 2), (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return _bgr(np.clip(grey.astype(np.float32) / np.maximum(bg, 1) * 235, 0, 255).astype(np.uint8))


def unwarp_sheet(img: Any) -> Any:
    import cv2
    import numpy as np

    grey = _grey(img)
    h, w = grey.shape
    f = 800 / max(h, w)
    small = cv2.GaussianBlur(cv2.resize(grey, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA), (5, 5), 0)
    _, th = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    th = cv2.morphologyEx(th, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    contours, _ = cv2.findContours(th, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return img
    c = max(contours, key=cv2.contourArea)
    quad = cv2.approxPolyDP(c, 0.02 * cv2.arcLength(c, True), True)
    if cv2.contourArea(c) < 0.3 * small.size or len(quad) != 4 or not cv2.isContourConvex(quad):
        return img
    q = quad.reshape(4, 2).astype(np.float32) / f
    s, d = q.sum(1), np.diff(q, axis=1).ravel()
    tl, tr, br, bl = q[np.argmin(s)], q[np.argmin(d)], q[np.argmax(s)], q[np.argmax(d)]
    width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(np.float32([tl, tr, br, bl]), target)
    return cv2.warpPerspective(img, matrix, (width, height), flags=cv2.INTER_CUBIC, borderValue=(255, 255, 255))


def destreak(img: Any) -> Any:
    import cv2

    grey = _grey(img).copy()
    black = (grey < 128).astype("uint8")
    line = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(3, black.shape[0] // 6)))
    grey[cv2.morphologyEx(black, cv2.MORPH_OPEN, line) > 0] = 255
    return _bgr(grey)


def despeckle(img: Any) -> Any:
    import cv2

    grey = _grey(img).copy()
    _, labels, stats, _ = cv2.connectedComponentsWithStats((grey < 128).astype("uint8"), connectivity=8)
    speck = stats[:, cv2.CC_STAT_AREA] <= 4
    speck[0] = False
    grey[speck[labels]] = 255
    return _bgr(grey)


VARIANTS = {
    "none": lambda img: img,
    "light": flatten_light,
    "sheet": unwarp_sheet,
    "both": lambda img: flatten_light(unwarp_sheet(img)),
    "destreak": destreak,
    "despeckle": despeckle,
    "fax": lambda img: despeckle(destreak(img)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", required=True, help="a bench/ocr/rescan.py set")
    parser.add_argument("--engine", default="rapidocr")
    parser.add_argument("--variants", default="none")
    parser.add_argument("--fax-floor", action="store_true", help="give the engine the fax floor")
    parser.add_argument("--cleanup", action="store_true", help="fax cleanup on in the page path")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = parser.parse_args(argv)

    import pypdfium2 as pdfium

    from bench.ocr import rescan
    from bench.ocr.run import score
    from contrackt.adapters.ocr import engines
    from contrackt.adapters.ocr.resolution import page_native
    from contrackt.adapters.ocr.worker_child import ChildConfig, PageWorker, _page_pixels

    pdf, truth = rescan.cached(args.corpus, args.set)
    if args.fax_floor:
        engines.ENGINES[args.engine] = dataclasses.replace(engines.ENGINES[args.engine], fax_floor=True)
    worker = PageWorker(ChildConfig(engine=args.engine, fax_cleanup=args.cleanup))
    worker.prepare(args.engine)
    doc = pdfium.PdfDocument(str(pdf))
    for name in args.variants.split(","):
        change = VARIANTS[name]
        hyps = []
        for index in range(len(truth)):
            page = doc[index]
            width, height = page.get_size()
            scan = page_native(page)

            def render(zoom: float, page: Any = page, change: Any = change) -> Any:
                return change(_page_pixels(page, zoom))

            hyps.append(worker._ocr_policy(index, args.engine, width, height, render, lambda scan=scan: scan)["text"])
            page.close()
        s = score(hyps, truth)
        print(f"{args.set} {args.engine} {name}: word recall {s['word_recall']:.2%}  CER {s['cer']:.2%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
