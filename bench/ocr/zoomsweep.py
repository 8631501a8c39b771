"""Zoom sweep: one engine, a few scanned pages, each read at several zooms; median detected box
height and CER per page and zoom (what ``EngineSpec.box_px`` was chosen from, ADR 0017 §5).

The engine is called directly in this process on PDFium renders (no pool, no orientation).

    .venv/bin/python -m bench.ocr.zoomsweep --engine rapidocr --zooms 1.0,1.25,1.5,2.0,2.5
    .venv/bin/python -m bench.ocr.zoomsweep --engine rapidocr-fast --zooms 0.9,1.1,1.25,1.5,2.0 --rescan
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import pypdfium2 as pdfium

    from bench.ocr import rescan
    from bench.ocr.dense import cached
    from bench.ocr.run import DEFAULT_CORPUS
    from contrackt.adapters.ocr.engines import load_engine
    from contrackt.adapters.ocr.rapidocr_engine import group_rows
    from helpers_cer import levenshtein, normalize

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="rapidocr")
    ap.add_argument("--zooms", default="1.0,1.25,1.5,2.0,2.5")
    ap.add_argument("--rescan", action="store_true", help="the small_300 and fax pages instead of dense/scan_*")
    args = ap.parse_args(argv)
    syn = DEFAULT_CORPUS / "synthetic"
    gt = [(syn / "gt" / f"page_{n:02d}.txt").read_text("utf-8") for n in range(1, 11)]
    if args.rescan:
        small = rescan.cached(DEFAULT_CORPUS, "small_300")[0]
        pages = [(small, 0, gt[0]), (small, 1, gt[1])]
        pages += [(rescan.cached(DEFAULT_CORPUS, name)[0], 0, gt[0]) for name in ("fax_std", "fax_fine")]
    else:
        dense, refs = cached()
        pages = [(dense, 0, refs[0]), (syn / "scan_hard.pdf", 3, gt[3]), (syn / "scan_mild.pdf", 6, gt[6])]
    engine = load_engine(args.engine)
    print(f"# zoom sweep {args.engine}, load average {os.getloadavg()[0]:.2f}")
    for path, index, ref in pages:
        page = pdfium.PdfDocument(str(path))[index]
        for zoom in (float(z) for z in args.zooms.split(",")):
            image = np.array(page.render(scale=zoom).to_numpy()[:, :, :3])
            t0 = time.perf_counter()
            boxes = engine.recognize(image)
            seconds = time.perf_counter() - t0
            text = "\n".join(line.text for line in group_rows(boxes))
            heights = [float(np.hypot(*(b.quad[3] - b.quad[0]))) for b in boxes] or [0.0]
            rate = levenshtein(normalize(text), normalize(ref)) / max(1, len(normalize(ref)))
            print(
                f"{Path(path).name:<28} p{index + 1:<3} zoom {zoom:<5} median box {float(np.median(heights)):5.1f} px"
                f"  CER {rate:6.2%}  {seconds:5.2f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
