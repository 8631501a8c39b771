"""What the GPU workers' pipe costs (ADR 0020, decision 4): a detector input from a child to the worker.

    .venv/bin/python -m bench.gpu.wire [--side 2016x1440] [--repeats 5]

A forked "child" packs a page's detector input (1 x 3 x H x W float32) and writes it as a ``model``
frame onto a pipe, as ``model_host.ParentChannel`` does; this process reads it with the pool's
``FrameReader`` and checks it with ``check_request``, as the worker does. Prints milliseconds per
request beside the time of one plain copy of the same bytes (the machine's memory speed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", default="2016x1440", help="detector input height x width")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np

    from contrackt.adapters.ocr.model_host import LIMITS, check_request, pack
    from contrackt.adapters.ocr.protocol import FrameReader, encode, write_all

    h, w = (int(v) for v in args.side.split("x"))
    page = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    copies = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        page.copy()
        copies.append(time.perf_counter() - started)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: pack and send, as ParentChannel.call does
        os.close(read_fd)
        for _ in range(args.repeats):
            specs, blob = pack([page])
            write_all(write_fd, encode({"op": "model", "kind": "det", "arrays": specs}, blob))
        os._exit(0)
    os.close(write_fd)
    reader = FrameReader(max_blob=LIMITS.max_request_bytes)
    got = 0
    started = time.perf_counter()
    while got < args.repeats:
        data = os.read(read_fd, 1 << 20)
        if not data:
            break
        for header, blob in reader.feed(data):
            check_request(header, blob)
            got += 1
    per_request = (time.perf_counter() - started) / max(got, 1)
    os.waitpid(pid, 0)
    os.close(read_fd)
    print(
        f"detector input {page.nbytes / 1e6:.1f} MB: {per_request * 1000:.1f} ms a request (pack, pipe, frame,"
        f" check; {got} requests); one copy of it {min(copies) * 1000:.1f} ms"
    )
    return 0 if got == args.repeats else 1


if __name__ == "__main__":
    raise SystemExit(main())
