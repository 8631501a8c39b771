"""Where an OCR page's time goes: render, orientation, detection, recognition, word boxes, the rest.

    .venv/bin/python -m bench.ocr.profile                       # the dense set, 2 pages, both profiles
    .venv/bin/python -m bench.ocr.profile --pdf FILE --pages 3 --engines rapidocr

Runs the child's own page path (``PageWorker.ocr_page``: render at the engine's
zoom, orientation, rapidocr's detection and crops, recognition, our word boxes,
row grouping and the page dict) in this process, one thread, with a timer around
each stage; the first page of each engine is read once untimed (ONNX Runtime sizes
its buffers on it). Prints seconds per page per stage and its share.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

STAGES = (
    "render",
    "orientation",
    "detection input",
    "detection",
    "recognition",
    "word boxes",
    "rows + page",
    "other",
)


def _timed(clock: dict[str, float], stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[stage] += time.perf_counter() - started

    return wrapper


class _TimedDetector:
    """rapidocr's detector with its calls timed; attribute reads and writes reach the detector
    (the engine sets its size limits per page). Its input (resize and normalisation) is timed
    apart as "detection input" and left out of "detection"."""

    def __init__(self, det: Any, clock: dict[str, float]) -> None:
        object.__setattr__(self, "_det", det)
        object.__setattr__(self, "_clock", clock)
        make_input = det.get_preprocess

        def timed_input() -> Any:
            return _timed(clock, "detection input", make_input())

        det.get_preprocess = timed_input

    def __call__(self, img: Any) -> Any:
        before = self._clock["detection input"]
        started = time.perf_counter()
        try:
            return self._det(img)
        finally:
            spent = time.perf_counter() - started
            self._clock["detection"] += spent - (self._clock["detection input"] - before)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._det, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._det, name, value)


def profile(engine_name: str, pdf: Path, pages: int) -> dict[str, float]:
    """Seconds per page per stage for ``engine_name`` on the first ``pages`` pages of ``pdf``."""
    import pypdfium2 as pdfium

    from contrackt.adapters.ocr import rapidocr_engine, worker_child
    from contrackt.adapters.ocr.worker_child import ChildConfig, PageWorker

    worker = PageWorker(ChildConfig(engine=engine_name))
    worker.load()
    worker.prepare(engine_name)
    engine = worker.get_engine(engine_name)
    clock: dict[str, float] = defaultdict(float)
    ocr = engine._ocr
    ocr._load_rec_model()
    ocr.text_det = _TimedDetector(ocr.text_det, clock)
    ocr.text_rec = _timed(clock, "recognition", ocr.text_rec)
    ocr.calc_word_boxes = _timed(clock, "word boxes", ocr.calc_word_boxes)
    if worker.orienter is not None:
        worker.orienter.detect = _timed(clock, "orientation", worker.orienter.detect)
    render, rows = worker_child._page_pixels, rapidocr_engine.group_rows
    worker_child._page_pixels = _timed(clock, "render", render)
    rapidocr_engine.group_rows = _timed(clock, "rows + page", rows)
    doc = pdfium.PdfDocument(str(pdf))
    try:
        count = min(pages, len(doc))
        page = doc[0]
        worker.ocr_page(page, 0, engine_name)  # untimed: first-run buffer sizing
        page.close()
        clock.clear()
        total = 0.0
        for index in range(count):
            page = doc[index]
            started = time.perf_counter()
            worker.ocr_page(page, index, engine_name)
            total += time.perf_counter() - started
            page.close()
    finally:
        doc.close()
        worker_child._page_pixels, rapidocr_engine.group_rows = render, rows
    out = {stage: clock.get(stage, 0.0) / count for stage in STAGES if stage != "other"}
    # rapidocr's detection stage includes cutting the crops; the page dict is built after rows
    out["other"] = total / count - sum(out.values())
    out["total"] = total / count
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf", type=Path, default=None, help="default: the dense set (bench/ocr/dense.py)")
    parser.add_argument("--pages", type=int, default=2)
    parser.add_argument("--engines", default="rapidocr,rapidocr-fast")
    args = parser.parse_args(argv)
    if args.pdf is None:
        from bench.ocr.dense import cached

        args.pdf, _ = cached()
    names = [e for e in args.engines.split(",") if e]
    print(f"# bench.ocr.profile  {args.pdf.name}, {args.pages} pages, load average {os.getloadavg()[0]:.2f}")
    results = {name: profile(name, args.pdf, args.pages) for name in names}
    print(f"{'stage':14}" + "".join(f"{name + ' s/page':>22}{'share':>7}" for name in names))
    for stage in (*STAGES, "total"):
        cells = "".join(f"{results[n][stage]:22.3f}{results[n][stage] / results[n]['total']:7.0%}" for n in names)
        print(f"{stage:14}{cells}")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
