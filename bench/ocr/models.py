"""The measurements behind the PP-OCR model choices (ADR 0005), in one process on one core.

    .venv/bin/python -m bench.ocr.models                # both parts (~2-3 min on an idle core)
    .venv/bin/python -m bench.ocr.models --part latin   # full vs Latin-restricted recogniser
    .venv/bin/python -m bench.ocr.models --part sweep   # PP-OCRv6 tiny: zoom x detection settings
    .venv/bin/python -m bench.ocr.models --part words   # word boxes: cost, and ours vs rapidocr's

``latin``: the line crops rapidocr feeds its recogniser on scan_hard pages
(1.5x) are recorded once, then every crop is run through the full and the
Latin-restricted recogniser of each engine, alternating, best of 3 passes;
prints CPU ms per line and whether the decoded text is identical.

``sweep``: PP-OCRv6 tiny (the ``rapidocr-fast`` models) over scan_hard at
several zooms and detection settings (``unclip_ratio`` / ``box_thresh``),
CER and CPU seconds per page, one engine instance per setting.

``words``: the same engine instance reads scan_hard pages without word
boxes, with ours (``rapidocr_engine._word_boxes``) and with rapidocr's own,
alternating, best of 2; prints CPU s/page of each and the IoU of our word
boxes against rapidocr's wherever both split a line into the same words.

CPU time (``time.process_time``) rather than wall time, so a busy shared
machine changes the numbers less; thread counts are pinned to one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from contrackt.adapters.ocr.engines import ENGINES, rapidocr_models  # noqa: E402
from contrackt.adapters.ocr.rapidocr_engine import RapidOcrEngine, _word_boxes, _words, group_rows  # noqa: E402
from helpers_cer import corpus_cer  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


def _pages(corpus: Path, name: str, zoom: float, count: int) -> list[np.ndarray]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(corpus / "synthetic" / name))
    return [np.ascontiguousarray(pdf[i].render(scale=zoom).to_numpy()[:, :, :3]) for i in range(min(count, len(pdf)))]


def _refs(corpus: Path, count: int) -> list[str]:
    return [(corpus / "synthetic" / "gt" / f"page_{i + 1:02d}.txt").read_text(encoding="utf-8") for i in range(count)]


class _Recorder:
    """Stands in for rapidocr's recogniser session: keeps every input, then runs it."""

    def __init__(self, session: object, crops: list[np.ndarray]) -> None:
        self.session, self.crops = session, crops

    def __call__(self, x: np.ndarray) -> object:
        self.crops.append(x.copy())
        return self.session(x)  # type: ignore[operator]


def latin(corpus: Path, pages: int) -> None:
    print("# full vs Latin-restricted recogniser: CPU ms per line crop (best of 3), same crops")
    print(f"{'engine':<15}{'classes':>16}{'full ms':>10}{'latin ms':>10}{'speed-up':>10}{'same text':>11}")
    for name in ("rapidocr", "rapidocr-fast"):
        det, rec, keys = rapidocr_models(name)
        spec = ENGINES[name]
        full = RapidOcrEngine(det=det, rec=rec, rec_dict=keys, latin=False)
        full.warm()
        restricted = RapidOcrEngine(det=det, rec=rec, rec_dict=keys)
        restricted.warm()
        crops: list[np.ndarray] = []
        rec_full = full._ocr.text_rec
        session = rec_full.session

        rec_full.session = _Recorder(session, crops)
        for image in _pages(corpus, "scan_hard.pdf", spec.zoom, pages):
            full._ocr(image, use_cls=False)
        rec_full.session = session
        sessions = {"full": session.session, "latin": restricted._ocr.text_rec.session.session}
        best = {k: float("inf") for k in sessions}
        outputs: dict[str, list[np.ndarray]] = {}
        for _ in range(3):
            for key, sess in sessions.items():
                inp = sess.get_inputs()[0].name
                start = time.process_time()
                outputs[key] = [sess.run(None, {inp: x})[0] for x in crops]
                best[key] = min(best[key], time.process_time() - start)
        decode_full = rec_full.postprocess_op
        decode_latin = restricted._ocr.text_rec.postprocess_op
        same = sum(
            decode_full(a)[0][0][0] == decode_latin(b)[0][0][0]
            for a, b in zip(outputs["full"], outputs["latin"], strict=True)
        )
        classes = f"{outputs['full'][0].shape[-1]} -> {outputs['latin'][0].shape[-1]}"
        ms = {k: 1000 * v / len(crops) for k, v in best.items()}
        print(
            f"{name:<15}{classes:>16}{ms['full']:>10.1f}{ms['latin']:>10.1f}"
            f"{ms['full'] / ms['latin']:>9.2f}x{same:>6}/{len(crops)}"
        )


def sweep(corpus: Path, pages: int) -> None:
    print("# PP-OCRv6 tiny on scan_hard: CER and CPU s/page by zoom and detection settings")
    print(f"{'zoom':>6}{'unclip':>8}{'box_th':>8}{'CER':>8}{'s/page':>8}")
    det, rec, keys = rapidocr_models("rapidocr-fast")
    refs = _refs(corpus, pages)
    for unclip, box in ((None, None), (1.4, 0.4)):
        engine = RapidOcrEngine(det=det, rec=rec, rec_dict=keys, unclip_ratio=unclip, box_thresh=box)
        engine.warm()
        for zoom in (1.0, 1.25, 1.5, 2.0):
            images = _pages(corpus, "scan_hard.pdf", zoom, pages)
            start = time.process_time()
            texts = ["\n".join(line.text for line in group_rows(engine.recognize(img))) for img in images]
            cpu = (time.process_time() - start) / len(images)
            value = corpus_cer(zip(texts, refs, strict=True))
            label_u = "1.6*" if unclip is None else f"{unclip}"
            label_b = "0.5*" if box is None else f"{box}"
            print(f"{zoom:>6}{label_u:>8}{label_b:>8}{100 * value:>7.2f}%{cpu:>8.3f}")
    print("(* rapidocr's defaults)")


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def words(corpus: Path, pages: int) -> None:
    print("# word boxes: CPU s/page without / with ours / with rapidocr's (best of 2); IoU ours vs rapidocr's")
    for name in ("rapidocr", "rapidocr-fast"):
        det, rec, keys = rapidocr_models(name)
        spec = ENGINES[name]
        engine = RapidOcrEngine(
            det=det, rec=rec, rec_dict=keys, unclip_ratio=spec.unclip_ratio, box_thresh=spec.box_thresh
        )
        engine.warm()
        ocr = engine._ocr
        images = _pages(corpus, "scan_hard.pdf", spec.zoom, pages)
        best = {"none": float("inf"), "ours": float("inf"), "rapidocr": float("inf")}
        outputs: dict[str, list[object]] = {}
        for _ in range(2):
            for label in best:
                if label == "rapidocr":
                    del ocr.calc_word_boxes  # back to RapidOCR's own method
                start = time.process_time()
                outputs[label] = [ocr(img, use_cls=False, return_word_box=label != "none") for img in images]
                best[label] = min(best[label], (time.process_time() - start) / len(images))
                ocr.calc_word_boxes = _word_boxes
        ious = []
        for ours_page, theirs_page in zip(outputs["ours"], outputs["rapidocr"], strict=True):
            for a, b in zip(ours_page.word_results, theirs_page.word_results, strict=False):  # type: ignore[attr-defined]
                wa, wb = _words(a), _words(b)
                if wa and [w[0] for w in wa] == [w[0] for w in wb]:
                    ious += [_iou(x[2], y[2]) for x, y in zip(wa, wb, strict=True)]
        print(
            f"{name:<15} none {best['none']:.3f}  ours {best['ours']:.3f}  rapidocr's {best['rapidocr']:.3f} s/page;"
            f"  {len(ious)} words, IoU median {np.median(ious):.2f}, 10th percentile {np.percentile(ious, 10):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--part", choices=("latin", "sweep", "words", "all"), default="all")
    parser.add_argument("--pages", type=int, default=10, help="scan_hard pages to use")
    args = parser.parse_args()
    if not (args.corpus / "synthetic" / "scan_hard.pdf").is_file():
        sys.exit(f"corpus not found at {args.corpus}")
    if args.part in ("latin", "all"):
        latin(args.corpus, min(args.pages, 3))
    if args.part in ("sweep", "all"):
        sweep(args.corpus, args.pages)
    if args.part in ("words", "all"):
        words(args.corpus, min(args.pages, 4))


if __name__ == "__main__":
    main()
