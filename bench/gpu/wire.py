"""What the GPU workers' pipe costs a page (ADR 0020, decisions 4 and 5): its model requests, from a
child to the worker, as float32 arrays and as uint8 pixels.

    .venv/bin/python -m bench.gpu.wire [--pdf FILE] [--page 1] [--engine rapidocr] [--repeats 5]

Reads one page (default: the first of the dense set, ``bench/ocr/dense.py``) in this process with
the child's remote model calls recorded instead of sent: the detector input and the recogniser
batches exactly as a child sends them. Then, for each encoding:

- **child**: packing and framing the page's requests (CPU ms a page, in this process);
- **worker**: a forked "child" writes the framed requests onto a pipe; this process reads them with
  the pool's ``FrameReader.read_from`` and checks them with ``check_request``, as the worker does (wall and
  CPU ms a page: the worker's one event loop serves every child, so its CPU time a page bounds
  the pages a second one worker can take in);
- **decode**: making the floats from pixels where a model does not take pixels itself (ONNX
  Runtime stand-ins; the torch runner makes them on the device).

Prints megabytes a page beside each, what the worker's replies weigh and cost it to pack, and one
plain copy of the float bytes (the memory's speed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def page_requests(pdf: Path, page: int, engine_name: str) -> list[tuple[str, list[Any]]]:
    """The model requests a child sends for ``page`` (1-based) of ``pdf``, as pixels."""
    import pypdfium2 as pdfium

    from contrackt.adapters.ocr.model_host import ParentChannel, attach_remote
    from contrackt.adapters.ocr.worker_child import ChildConfig, PageWorker

    calls: list[tuple[str, list[Any]]] = []

    class Recording(ParentChannel):
        def call(self, kind: str, inputs: list[Any]) -> None:
            calls.append((kind, list(inputs)))
            return None  # read here, as a child does when the worker does not answer

    worker = PageWorker(ChildConfig(engine=engine_name))
    worker.load()
    worker.prepare(engine_name)
    engine = worker.get_engine(engine_name)
    engine._ocr._load_rec_model()
    attach_remote(engine, Recording())
    doc = pdfium.PdfDocument(str(pdf))
    try:
        worker.ocr_page(doc[page - 1], page - 1, engine_name)
    finally:
        doc.close()
    return calls


def frames(requests: list[tuple[str, list[Any]]]) -> list[bytes]:
    from contrackt.adapters.ocr.model_host import pack
    from contrackt.adapters.ocr.protocol import encode

    out = []
    for kind, inputs in requests:
        specs, blob = pack(inputs)
        out.append(encode({"op": "model", "kind": kind, "arrays": specs}, blob))
    return out


def child_ms(requests: list[tuple[str, list[Any]]], repeats: int) -> float:
    started = time.process_time()
    for _ in range(repeats):
        frames(requests)
    return (time.process_time() - started) / repeats * 1000


def reply_ms(requests: list[tuple[str, list[Any]]], repeats: int) -> tuple[float, float]:
    """(MB, CPU ms) a page of the worker's answers, packed and framed as ``DeviceHost.answer``
    does: the detector's probability map (float32, the input's size) and, per recogniser batch,
    arg-max ids (int64) and their probabilities (float32), one per ``stride`` (8) columns."""
    import numpy as np

    from contrackt.adapters.ocr.batching import valid_steps
    from contrackt.adapters.ocr.model_host import pack
    from contrackt.adapters.ocr.protocol import encode

    replies: list[list[Any]] = []
    for kind, inputs in requests:
        outputs: list[Any] = []
        for item in inputs:
            n, _, height, width = item.shape
            if kind == "det":
                outputs.append(np.zeros((n, 1, height, width), np.float32))
            else:
                steps = valid_steps(width, 8)
                outputs += [np.zeros((n, steps), np.int64), np.zeros((n, steps), np.float32)]
        replies.append(outputs)
    size = 0
    started = time.process_time()
    for _ in range(repeats):
        size = 0
        for outputs in replies:
            specs, blob = pack(outputs)
            size += len(encode({"op": "model_result", "arrays": specs}, blob))
    return size / 1e6, (time.process_time() - started) / repeats * 1000


def worker_ms(encoded: list[bytes], repeats: int) -> tuple[float, float]:
    """(wall, CPU) ms a page for the worker to take the page's frames off a pipe and check them."""
    from contrackt.adapters.ocr.model_host import LIMITS, check_request
    from contrackt.adapters.ocr.protocol import FrameReader, write_all

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only writes (its packing is timed apart)
        os.close(read_fd)
        for _ in range(repeats):
            for frame in encoded:
                write_all(write_fd, frame)
        os._exit(0)
    os.close(write_fd)
    reader = FrameReader(max_blob=LIMITS.max_request_bytes)
    want, got = repeats * len(encoded), 0
    wall, cpu = time.perf_counter(), time.process_time()
    while got < want:
        complete = reader.read_from(read_fd)  # as the pool reads a child's pipe
        if complete is None:
            break
        for header, blob in complete:
            check_request(header, blob)
            got += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    os.waitpid(pid, 0)
    os.close(read_fd)
    if got != want:
        raise SystemExit(f"only {got} of {want} frames arrived")
    return wall / repeats * 1000, cpu / repeats * 1000


def decode_ms(requests: list[tuple[str, list[Any]]], repeats: int) -> float:
    from contrackt.adapters.ocr.pixels import as_floats

    started = time.process_time()
    for _ in range(repeats):
        for _, inputs in requests:
            for item in inputs:
                as_floats(item)
    return (time.process_time() - started) / repeats * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf", type=Path, default=None, help="default: the dense set's PDF")
    parser.add_argument("--page", type=int, default=1)
    parser.add_argument("--engine", default="rapidocr")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.pdf is None:
        from bench.ocr.dense import cached

        args.pdf, _ = cached()

    import numpy as np

    from contrackt.adapters.ocr.pixels import Pixels, as_floats

    pixels = page_requests(args.pdf, args.page, args.engine)
    for _, sent in pixels:
        assert all(isinstance(item, Pixels) for item in sent), "a request left the child as floats"
    floats = [(kind, [as_floats(item) for item in inputs]) for kind, inputs in pixels]
    print(
        f"# bench.gpu.wire  {args.pdf.name} page {args.page}, {args.engine}, {args.repeats} repeats,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    shape = {kind: [item.shape for item in inputs] for kind, inputs in pixels}
    lines = sum(len(item) for kind, inputs in pixels if kind == "rec" for item in inputs)
    print(
        f"# the page's requests: {len(pixels)} ({sum(k == 'det' for k, _ in pixels)} detector input"
        f" {shape.get('det', [])}, {sum(len(v) for k, v in shape.items() if k == 'rec')} recogniser batches"
        f" of {lines} lines)"
    )
    float_bytes = sum(a.nbytes for _, inputs in floats for a in inputs)
    copies = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _, inputs in floats:
            for a in inputs:
                np.copy(a)
        copies.append(time.perf_counter() - started)
    heads = f"{'MB a page':>11}{'child ms':>10}{'worker wall ms':>16}{'worker CPU ms':>15}{'decode ms':>11}"
    print(f"{'encoding':10}{heads}")
    for name, requests in (("float32", floats), ("pixels", pixels)):
        encoded = frames(requests)
        size = sum(len(f) for f in encoded) / 1e6
        wall, cpu = worker_ms(encoded, args.repeats)
        decode = decode_ms(requests, args.repeats) if name == "pixels" else 0.0
        print(f"{name:10}{size:11.1f}{child_ms(requests, args.repeats):10.1f}{wall:16.1f}{cpu:15.1f}{decode:11.1f}")
    reply_mb, reply_cpu = reply_ms(pixels, args.repeats)
    print(f"# the worker's replies: {reply_mb:.1f} MB a page, packed and framed in {reply_cpu:.1f} ms CPU")
    print(f"# one copy of the float bytes ({float_bytes / 1e6:.1f} MB): {min(copies) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
