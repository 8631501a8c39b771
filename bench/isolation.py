"""What the OCR sandbox policy costs: a fresh, confined child for every slice of every job.

    .venv/bin/python -m bench.isolation                    # new vs the pool before the sandbox
    .venv/bin/python -m bench.isolation --baseline REV --json out.json

Runs the same workloads twice in one run, each side in a process of its own:

* ``new``: this tree's pool: a zygote forks a child per slice of a job; each child
  switches to its own uid, sets its limits, loads a seccomp filter, reads one
  document and is killed (docs/adr/0006-ocr-sandbox.md);
* ``old``: the pool at ``--baseline`` (default ``c9316e8``, the last commit before
  the sandbox): long-lived warm children serving every job, a two-document cache,
  pickled replies, no uid switch, no seccomp. Exported with ``git archive``.

Workloads (``--workers`` slots, default engine, start-up excluded):

* ``small-text``: 40 one-page born-digital jobs, ``--workers`` at a time (the worst
  case for a per-job child: the work itself is a millisecond);
* ``text-200``: one 200-page born-digital job;
* ``small-scan``: 8 one-page scans (scan_mild page 1), ``--workers`` at a time;
* ``scan-10``: one 10-page scan (scan_hard).

Prints jobs/s, pages/s and p50/p95 job latency per side and the new/old ratio.
The machine is shared: compare the two sides of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
BASELINE = "c9316e8"


def one_page(path: Path, index: int) -> bytes:
    import pypdfium2 as pdfium

    src = pdfium.PdfDocument(path.read_bytes())
    out = pdfium.PdfDocument.new()
    out.import_pages(src, [index])
    buf = io.BytesIO()
    out.save(buf)
    return buf.getvalue()


def workloads() -> dict[str, tuple[list[bytes], int]]:
    """name -> (documents, how many at a time)."""
    synth = CORPUS / "synthetic"
    return {
        "small-text": ([one_page(synth / "born_digital.pdf", 0)] * 40, 0),
        "text-200": ([(synth / "born_digital_x20.pdf").read_bytes()], 1),
        "small-scan": ([one_page(synth / "scan_mild.pdf", 0)] * 8, 0),
        "scan-10": ([(synth / "scan_hard.pdf").read_bytes()], 1),
    }


# ----------------------------------------------------------------------------- one side


async def run_side(workers: int) -> dict[str, dict[str, float]]:
    from contrackt.adapters.ocr.pool import ProcessPoolExtractor
    from contrackt.ports.extractor import ExtractOptions

    pool = ProcessPoolExtractor(workers=workers)
    await pool.start()
    out: dict[str, dict[str, float]] = {}
    try:
        warm = one_page(CORPUS / "synthetic" / "scan_mild.pdf", 1)
        await pool.extract(warm, ExtractOptions())  # first use of everything, not timed
        for name, (docs, at_once) in workloads().items():
            at_once = at_once or workers
            latencies: list[float] = []
            pages: list[int] = []
            queue = list(docs)

            async def lane(queue: list[bytes], latencies: list[float], pages: list[int]) -> None:
                while queue:
                    doc = queue.pop()
                    t0 = time.perf_counter()
                    result = await pool.extract(doc, ExtractOptions())
                    latencies.append(time.perf_counter() - t0)
                    pages.append(len(result.pages))

            t0 = time.perf_counter()
            await asyncio.gather(*(lane(queue, latencies, pages) for _ in range(at_once)))
            wall = time.perf_counter() - t0
            latencies.sort()
            out[name] = {
                "jobs_per_s": len(docs) / wall,
                "pages_per_s": sum(pages) / wall,
                "p50_s": statistics.median(latencies),
                "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
                "wall_s": wall,
            }
        peak = getattr(pool, "peak_child_rss_kb", None)
        if peak is None:  # the old pool: its children are still alive
            peak = max((_hwm_kb(pid) for pid in pool.child_pids()), default=0)
        out["children"] = {"peak_rss_mb": peak / 1024, "spawned": float(getattr(pool, "spawned", 0))}
    finally:
        await pool.close()
    return out


def _hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- the harness


def side(src: Path, workers: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.isolation", "--side", "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"side {src} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, dict[str, float]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the pool to compare with")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(asyncio.run(run_side(args.workers))))
        return
    if not CORPUS.is_dir():
        raise SystemExit(f"corpus missing: {CORPUS}")
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "src"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        results = {"old": side(Path(tmp) / "src", args.workers), "new": side(ROOT / "src", args.workers)}
    print(f"load average at end:   {os.getloadavg()}")
    header = f"{'workload':<12}{'side':<5}{'jobs/s':>9}{'pages/s':>9}{'p50 s':>8}{'p95 s':>8}"
    print(header)
    for name in workloads():
        for label in ("old", "new"):
            r = results[label][name]
            print(
                f"{name:<12}{label:<5}{r['jobs_per_s']:>9.2f}{r['pages_per_s']:>9.2f}{r['p50_s']:>8.3f}{r['p95_s']:>8.3f}"
            )
        ratio = results["new"][name]["pages_per_s"] / results["old"][name]["pages_per_s"]
        print(f"{'':<12}new/old pages/s {ratio:.2f}")
    for label in ("old", "new"):
        c = results[label]["children"]
        print(f"{label}: peak child RSS {c['peak_rss_mb']:.0f} MB, children started {c['spawned']:.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
