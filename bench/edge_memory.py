"""Peak memory of `contrackt api` while N uploads of 50 MiB arrive at once.

    .venv/bin/python -m bench.edge_memory --uploads 8 [--mb 50]

Starts `contrackt api` on a free port with a fresh CONTRACKT_HOME and both upload caps at N,
posts N raw bodies at once over loopback (the most simultaneous they can be) and prints the
server's peak RSS (VmHWM) before and after.  Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "contrackt"


def peak_rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmHWM"))
    return int(line.split()[1]) // 1024


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.edge_memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=8)
    ap.add_argument("--mb", type=int, default=50)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="contrackt-edge-memory-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(
        CONTRACKT_HOME=str(home),
        CONTRACKT_LOG_FORMAT="json",
        CONTRACKT_MAX_UPLOAD_MB=str(args.mb),
        CONTRACKT_MAX_UPLOADS_PER_KEY=str(args.uploads),
        CONTRACKT_MAX_CONCURRENT_UPLOADS=str(args.uploads),
        CONTRACKT_RATE_LIMIT_EXTRACT="100000/minute",
        CONTRACKT_MAX_QUEUE_DEPTH="100000",
    )
    out = subprocess.run([str(BIN), "tenant", "create", "mem", "--json"], env=env, capture_output=True, text=True)
    key = json.loads(out.stdout)["api_key"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (home / "api.log").open("wb") as log:
        proc = subprocess.Popen([str(BIN), "api", "--port", str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/v1/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        idle = peak_rss_mb(proc.pid)
        body = b"%PDF-1.7\n" + os.urandom(args.mb * 1024 * 1024 - 9)
        codes: list[int] = []

        def upload() -> None:
            headers = {"X-API-Key": key, "Content-Type": "application/pdf"}
            codes.append(httpx.post(f"{url}/v1/extract", content=body, headers=headers, timeout=300).status_code)

        threads = [threading.Thread(target=upload) for _ in range(args.uploads)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(
            json.dumps(
                {
                    "uploads": args.uploads,
                    "mb_each": args.mb,
                    "statuses": sorted(codes),
                    "seconds": round(time.monotonic() - started, 1),
                    "idle_peak_rss_mb": idle,
                    "peak_rss_mb": peak_rss_mb(proc.pid),
                }
            )
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
