"""Recognition in width-bucketed batches against one line at a time: line parity and speed.

    .venv/bin/python -m bench.ocr.batching                      # every corpus scan page
    .venv/bin/python -m bench.ocr.batching --pages 2 --files scan_hard.pdf

The line crops are the default engine's own (PP-OCRv6 small detector at the
engine's zoom); each page's crops are read by rapidocr's recogniser one line at
a time (what the engine runs today, lines padded to 320 px) and by
``batching.recognise`` (buckets, each line cut at its own width), alternately
page by page in one process and one thread, so load on a shared machine hits
both alike. Prints line parity (same text), seconds of recognition each way,
and the lines that differ.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

CORPUS = ROOT.parent / "shared" / "corpus"
SCANS = (
    "synthetic/scan_mild.pdf",
    "synthetic/scan_hard.pdf",
    "real/linn.pdf",
    "real/typewriter.pdf",
    "real/c02-22.pdf",
    "real/francais.pdf",
    "real/skew.pdf",
    "real/epson.pdf",
)


@dataclass
class Tally:
    lines: int = 0
    same: int = 0
    batches: int = 0
    single_s: float = 0.0
    batched_s: float = 0.0
    differ: list[tuple[str, str]] = field(default_factory=list)

    @property
    def parity(self) -> float:
        return self.same / self.lines if self.lines else 1.0


def page_images(pdf: Path, zoom: float, limit: int | None) -> list[Any]:
    import numpy as np
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        out = []
        for index in range(len(doc) if limit is None else min(limit, len(doc))):
            bitmap = doc[index].render(scale=zoom)
            image = bitmap.to_numpy()
            out.append(np.array(image[:, :, :3]))
        return out
    finally:
        doc.close()


class CropRecorder:
    """Stands in for rapidocr's recogniser while detection runs: keeps the crops, reads nothing."""

    def __init__(self) -> None:
        self.crops: list[Any] = []

    def __call__(self, args: Any) -> Any:
        from rapidocr.ch_ppocr_rec.typings import TextRecOutput

        self.crops = list(args.img)
        n = len(self.crops)
        return TextRecOutput(imgs=self.crops, txts=("x",) * n, scores=[1.0] * n, word_results=((),) * n)


def line_crops(engine: Any, image: Any) -> list[Any]:
    """The crops the engine's detector cuts from ``image`` (its recogniser is not run)."""
    ocr = engine._ocr
    single = ocr.text_rec
    recorder = CropRecorder()
    ocr.text_rec = recorder
    try:
        ocr(image, use_cls=False)
    finally:
        ocr.text_rec = single
    return recorder.crops


def compare(engine: Any, crops: list[Any], tally: Tally, bucketing: Any) -> None:
    """Read ``crops`` one at a time (rapidocr) and batched; add to ``tally``."""
    from rapidocr.ch_ppocr_rec.typings import TextRecInput

    from contrackt.adapters.ocr.batching import BatchedTextRecognizer, plan, scaled_width

    if not crops:
        return
    single = engine._ocr.text_rec
    batched = BatchedTextRecognizer(single, bucketing)
    started = time.perf_counter()
    ref = single(TextRecInput(img=crops, return_word_box=True))
    tally.single_s += time.perf_counter() - started
    started = time.perf_counter()
    got = batched(TextRecInput(img=crops, return_word_box=True))
    tally.batched_s += time.perf_counter() - started
    tally.batches += len(plan([scaled_width(c) for c in crops], bucketing))
    for a, b in zip(ref.txts, got.txts, strict=True):
        tally.lines += 1
        if a == b:
            tally.same += 1
        else:
            tally.differ.append((a, b))


def main(argv: list[str] | None = None) -> int:
    from contrackt.adapters.ocr.batching import Bucketing
    from contrackt.adapters.ocr.engines import ENGINES, load_engine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--files", nargs="*", default=list(SCANS), help="PDFs under the corpus")
    parser.add_argument("--pages", type=int, default=None, help="first N pages of each file")
    parser.add_argument("--engine", default="rapidocr")
    parser.add_argument("--max-lines", type=int, default=Bucketing.max_lines)
    parser.add_argument("--min-width", type=int, default=Bucketing.min_width)
    parser.add_argument("--align", type=int, default=Bucketing.align)
    parser.add_argument("--growth", type=float, default=Bucketing.max_growth)
    parser.add_argument("--show", type=int, default=10, help="differing lines to print")
    args = parser.parse_args(argv)
    bucketing = Bucketing(max_lines=args.max_lines, min_width=args.min_width, align=args.align, max_growth=args.growth)
    engine = load_engine(args.engine)
    zoom = ENGINES[args.engine].zoom
    total = Tally()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.engine} at {zoom}x; {bucketing}")
    print(
        f"{'file':34} {'lines':>6} {'parity':>8} {'lines/batch':>11} {'single s':>9} {'batched s':>9} {'speed-up':>8}"
    )
    for name in args.files:
        path = name if Path(name).is_absolute() else args.corpus / name
        tally = Tally()
        for image in page_images(Path(path), zoom, args.pages):
            compare(engine, line_crops(engine, image), tally, bucketing)
        total.lines += tally.lines
        total.same += tally.same
        total.single_s += tally.single_s
        total.batched_s += tally.batched_s
        total.batches += tally.batches
        total.differ += tally.differ
        print(
            f"{name:34} {tally.lines:6d} {tally.parity:8.2%} {tally.lines / max(tally.batches, 1):11.2f} "
            f"{tally.single_s:9.2f} {tally.batched_s:9.2f} "
            f"{tally.single_s / max(tally.batched_s, 1e-9):8.2f}x"
        )
    print(
        f"{'all':34} {total.lines:6d} {total.parity:8.2%} {total.lines / max(total.batches, 1):11.2f} "
        f"{total.single_s:9.2f} {total.batched_s:9.2f} "
        f"{total.single_s / max(total.batched_s, 1e-9):8.2f}x   (load average {os.getloadavg()[0]:.2f})"
    )
    for a, b in total.differ[: args.show]:
        print(f"  single {a!r}\n  batched {b!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
