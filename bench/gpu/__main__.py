"""GPU recognition: lines/s and line parity with the CPU engine (ONNX Runtime, CUDA provider).

NOT YET RUN ON A GPU (issue 13, ADR 0017): no GPU machine was lent when this was written, so it
has only been exercised with ``--provider CPUExecutionProvider``. It needs ``onnxruntime-gpu``
(same version as ``onnxruntime``) in place of ``onnxruntime`` on the GPU machine.

    .venv/bin/python -m bench.gpu                                   # dense set, CUDA
    .venv/bin/python -m bench.gpu --provider CPUExecutionProvider --pages 1 --batch 16   # dry run

What it does: renders the pages at the default engine's zoom and cuts their line crops with the
CPU engine's detector (detection on the GPU is not built yet); reads every crop with the CPU
engine one line at a time (the reference), then with ``batching.recognise`` over an
``ArgMaxLineRunner`` session on the chosen provider, crops of all pages batched together (the
arg-max is taken in the graph, so only ids and probabilities come back); prints lines/s of the
GPU recognition (after one warm-up pass), the CPU engine's lines/s, and line parity. End-to-end
pages/s (render + detection + recognition + rows) is not printed: detection still runs on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf", type=Path, default=None, help="default: the dense set (bench/ocr/dense.py)")
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--provider", default="CUDAExecutionProvider")
    parser.add_argument("--batch", type=int, default=128, help="most lines a batch")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    from rapidocr.ch_ppocr_rec.typings import TextRecInput

    from bench.ocr.batching import line_crops, page_images
    from contrackt.adapters.ocr.batching import ArgMaxLineRunner, Bucketing, decode, recognise, with_argmax
    from contrackt.adapters.ocr.engines import ENGINES, load_engine, rapidocr_models
    from contrackt.adapters.ocr.latin import restrict_to_latin

    if args.provider not in ort.get_available_providers():
        print(f"{args.provider} is not available here ({ort.get_available_providers()}); install onnxruntime-gpu")
        return 2
    if args.pdf is None:
        from bench.ocr.dense import cached

        args.pdf, _ = cached()
    engine = load_engine("rapidocr")
    crops = [
        c for image in page_images(args.pdf, ENGINES["rapidocr"].zoom, args.pages) for c in line_crops(engine, image)
    ]
    single = engine._ocr.text_rec
    started = time.perf_counter()
    reference = single(TextRecInput(img=crops)).txts
    cpu_s = time.perf_counter() - started

    _, rec, keys = rapidocr_models("rapidocr")
    model, characters = restrict_to_latin(rec, keys)
    providers = list(dict.fromkeys([args.provider, "CPUExecutionProvider"]))
    session = ort.InferenceSession(with_argmax(model), providers=providers)
    runner = ArgMaxLineRunner(session)
    bucketing = Bucketing(max_lines=args.batch, max_pixels=args.batch * 48 * 2000)
    table = ["blank", *characters, " "]
    recognise(crops, runner, bucketing)  # warm-up: kernels and memory for each batch shape
    started = time.perf_counter()
    readings = recognise(crops, runner, bucketing)
    gpu_s = time.perf_counter() - started
    texts = [decode(r, table)[0] for r in readings]
    same = sum(a == b for a, b in zip(reference, texts, strict=True))
    print(f"# bench.gpu  provider {args.provider}  {args.pdf.name}: {args.pages} pages, {len(crops)} lines")
    print(f"recognition  {args.provider}: {len(crops) / gpu_s:8.1f} lines/s")
    print(f"recognition  CPU engine, one line at a time: {len(crops) / cpu_s:8.1f} lines/s")
    print(f"line parity with the CPU engine: {same}/{len(crops)} = {same / max(len(crops), 1):.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
