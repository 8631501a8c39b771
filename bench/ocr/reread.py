"""Line re-reads tried before one was kept (issue 13 item 1, ADR 0017 §7).

Each variant reads, once more, every line the engine scored under ``--below`` (the page path of
``PageWorker._ocr_policy``: adaptive scale, cleanup, orientation, rows) and keeps whichever reading
scores higher; prints word recall, CER, lines re-read and kept, and the seconds for the set. The
product's own re-read is off except in ``small``, so ``none`` is the engine alone.

    .venv/bin/python -m bench.ocr.reread --sets fax_noisy,phone_hard,fax_std --variants none,pad15,up2
    .venv/bin/python -m bench.ocr.reread --engine rapidocr-fast --variants none,small --below 0.95

Variants: ``padNN`` the line's box widened by NN % of its height on every side, same recogniser;
``upF`` the crop enlarged F times (bicubic) before the recogniser (both after every detection pass);
``small`` the product's re-read (``CONTRACKT_OCR_LINE_REREAD``): the default engine's recogniser on
the same crops, once, on the pass the page policy keeps, on pages where the unsure lines are at
least ``--share`` of the page's (default 0: every page).
Sets: ``scan_mild`` and ``scan_hard`` (the corpus's, 10 pages), ``dense`` (``bench/ocr/dense.py``,
4 pages, as ``bench.ocr`` reads it) and the ``bench/ocr/rescan.py`` sets (3 pages each).
``--shares`` prints, per detection pass, how many of its lines scored under ``--below`` (where
the ``--share`` gate would fall).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "src", ROOT, ROOT / "tests"):
    sys.path.insert(0, str(_p))


def _widened(quad: Any, fraction: float, width: int, height: int) -> Any:
    import numpy as np

    q = quad.astype(np.float32)
    h = (np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2
    ux = (q[1] - q[0]) / max(float(np.linalg.norm(q[1] - q[0])), 1e-6)
    uy = (q[3] - q[0]) / max(float(np.linalg.norm(q[3] - q[0])), 1e-6)
    dx, dy = ux * fraction * h, uy * fraction * h
    out = np.array([q[0] - dx - dy, q[1] + dx - dy, q[2] + dx + dy, q[3] - dx + dy], np.float32)
    out[:, 0] = out[:, 0].clip(0, width - 1)
    out[:, 1] = out[:, 1].clip(0, height - 1)
    return out


class _Trial:
    """Wraps ``RapidOcrEngine.recognize``: the variant's re-read after every detection pass."""

    def __init__(self, strong: Any) -> None:
        self.strong = strong
        self.variant = "none"
        self.below = 0.95
        self.shares: list[tuple[int, int]] = []  # per detection pass: lines under below, lines
        self.read = self.kept = 0

    def after(self, engine: Any, image: Any, boxes: list[Any]) -> list[Any]:
        import cv2
        from rapidocr.utils.process_img import get_rotate_crop_image

        from contrackt.adapters.ocr.rapidocr_engine import read_again

        self.shares.append((sum(b.score < self.below for b in boxes), len(boxes)))
        if self.variant in ("none", "small"):  # small: the product's own re-read (see main)
            return boxes
        low = [i for i, b in enumerate(boxes) if b.score < self.below]
        self.read += len(low)
        if not low:
            return boxes
        h, w = image.shape[:2]
        quads, crops = [], []
        for i in low:
            quad = boxes[i].quad
            if self.variant.startswith("pad"):
                quad = _widened(quad, float(self.variant[3:]) / 100, w, h)
            crop = get_rotate_crop_image(image, quad.astype("float32").copy())
            if self.variant.startswith("up"):
                f = float(self.variant[2:])
                crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
            quads.append(quad)
            crops.append(crop)
        out = read_again(boxes, low, quads, crops, engine._ocr.text_rec)
        self.kept += sum(a is not b for a, b in zip(out, boxes, strict=True))
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="fax_noisy,phone_hard,fax_std")
    parser.add_argument("--engine", default="rapidocr")
    parser.add_argument("--variants", default="none,pad15,up2")
    parser.add_argument("--below", type=float, default=0.95, help="lines scored under this are read again")
    parser.add_argument(
        "--share", type=float, default=0.0, help="small: only on pages where such lines are at least this share"
    )
    parser.add_argument(
        "--shares", action="store_true", help="also print each detection pass's share of lines under --below"
    )
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = parser.parse_args(argv)

    import pypdfium2 as pdfium

    from bench.ocr import rescan
    from bench.ocr.run import score
    from contrackt.adapters.ocr import engines, rapidocr_engine
    from contrackt.adapters.ocr.resolution import page_native
    from contrackt.adapters.ocr.worker_child import ChildConfig, PageWorker, _page_pixels

    # "small" is the product's re-read (once, on the pass the page policy keeps) at --below and
    # --share; the other variants re-read after every detection pass
    engines.ENGINES[args.engine] = dataclasses.replace(
        engines.ENGINES[args.engine], reread_with="rapidocr", reread_below=args.below, reread_share=args.share
    )
    config = ChildConfig(engine=args.engine, extra_engines=("rapidocr",), line_reread="all")
    worker = PageWorker(config)
    worker.prepare(args.engine)
    worker.prepare("rapidocr")
    trial = _Trial(worker.loaded["rapidocr"])
    trial.below = args.below
    recognize = rapidocr_engine.RapidOcrEngine.recognize
    reread = rapidocr_engine.RapidOcrEngine.reread

    def patched(self: Any, image: Any, det_scale: float = 1.0) -> list[Any]:
        return trial.after(self, image, recognize(self, image, det_scale))

    def counted(self: Any, image: Any, boxes: list[Any], below: float, helper: Any, share: float = 0.0) -> list[Any]:
        out = reread(self, image, boxes, below, helper, share)
        if out is not boxes:
            trial.read += sum(b.score < below for b in boxes)
            trial.kept += sum(a is not b for a, b in zip(out, boxes, strict=True))
        return out

    rapidocr_engine.RapidOcrEngine.recognize = patched  # type: ignore[method-assign]
    rapidocr_engine.RapidOcrEngine.reread = counted  # type: ignore[method-assign]
    for name in args.sets.split(","):
        if name == "dense":
            from bench.ocr.dense import cached

            pdf, truth = cached()
        elif name in ("scan_mild", "scan_hard"):
            pdf = args.corpus / "synthetic" / f"{name}.pdf"
            truth = [(args.corpus / "synthetic" / "gt" / f"page_{n:02d}.txt").read_text("utf-8") for n in range(1, 11)]
        else:
            pdf, truth = rescan.cached(args.corpus, name)
        doc = pdfium.PdfDocument(str(pdf))
        for variant in args.variants.split(","):
            trial.variant, trial.read, trial.kept, trial.shares = variant, 0, 0, []
            worker.config = dataclasses.replace(config, line_reread="all" if variant == "small" else "off")
            hyps = []
            started = time.perf_counter()
            for index in range(len(truth)):
                page = doc[index]
                width, height = page.get_size()
                scan = page_native(page)

                def render(zoom: float, page: Any = page) -> Any:
                    return _page_pixels(page, zoom)

                hyps.append(worker._ocr_policy(index, args.engine, width, height, render, lambda s=scan: s)["text"])
            s = score(hyps, truth)
            print(
                f"{name} {args.engine} {variant} <{args.below}: word recall {s['word_recall']:.2%}  CER {s['cer']:.2%}"
                f"  lines re-read {trial.read}, kept {trial.kept}  {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            if args.shares:
                passes = " ".join(f"{low}/{n}" for low, n in trial.shares if n > 1)
                print(f"  unsure lines per detection pass (pages in order, passes of a page together): {passes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
