"""Fair share, measured on real processes and real OCR: tenant A submits many scanned pages,
then tenant B one born-digital document; how long does B wait?

    .venv/bin/python -m bench.fairness                       # embedded `contrackt serve`, defaults
    .venv/bin/python -m bench.fairness --mode production     # `contrackt api` + 2 `contrackt worker`
    .venv/bin/python -m bench.fairness --scans 10 --json out.json
    .venv/bin/python -m bench.fairness --compare              # text slots off, then on (default)

Embedded: a fresh CONTRACKT_HOME, every setting at its default. Production: PostgreSQL (a
fresh database), Redis Streams, Redis results, moto S3 from ``.test-services/env``
(``scripts/services.sh``), every fair-share, lease and concurrency setting at its default, each
worker's OCR children sized to its half of the host's cores (as pods are sized).
A submits ``--scans`` copies of ``synthetic/scan_hard.pdf`` (10 pages each); once A's
first job is being processed, B submits ``synthetic/born_digital.pdf`` (10 text-layer
pages). Printed: B's latency (submit -> completed) and how much of A was still unfinished.
``--compare`` runs it twice in a row, ``CONTRACKT_OCR_TEXT_SLOTS=0`` (B's text layers wait
for an OCR slot, as before text slots) and then at its default (one text slot per worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import stack
from bench.stack import CORPUS, load


async def scenario(base: str, a_key: str, b_key: str, scans: int) -> dict[str, Any]:
    scan = (CORPUS / "scan_hard.pdf").read_bytes()
    born = (CORPUS / "born_digital.pdf").read_bytes()
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def post(key: str, doc: bytes) -> str:
            headers = {"X-API-Key": key, "Content-Type": "application/pdf"}
            r = await http.post("/v1/extract", content=doc, headers=headers)
            assert r.status_code == 202, r.text
            job_id: str = r.json()["job_id"]
            return job_id

        async def status(key: str, job_id: str) -> str:
            body = (await http.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key})).json()
            state: str = body["status"]
            return state

        a_jobs = [await post(a_key, scan) for _ in range(scans)]
        while await status(a_key, a_jobs[0]) == "pending":
            await asyncio.sleep(0.2)
        started = time.monotonic()
        b_job = await post(b_key, born)
        while (state := await status(b_key, b_job)) not in ("completed", "failed"):
            await asyncio.sleep(0.1)
        latency = time.monotonic() - started
        a_states = [await status(a_key, j) for j in a_jobs]
    return {
        "b_status": state,
        "b_latency_s": round(latency, 2),
        "a_jobs": scans,
        "a_pages": scans * 10,
        "a_completed_when_b_done": sum(s == "completed" for s in a_states),
    }


def embedded(tmp: Path, scans: int, extra: dict[str, str] | None = None) -> dict[str, Any]:
    with stack.embedded(tmp, ["A", "B"], extra) as (s, (a, b)):
        return asyncio.run(scenario(s.url, a, b, scans))


def production(tmp: Path, scans: int, extra: dict[str, str] | None = None) -> dict[str, Any]:
    # Two workers share this host's cores as two pods would each have their own: each runs one OCR
    # child per core of its share (the deploy sets CONTRACKT_WORKERS to a pod's cores). Left at the
    # default (every core) both would run one per core of the host, two OCR processes a core, and
    # B would wait for A's pages read at half speed (ADR 0007).
    share = str(max(1, (os.cpu_count() or 2) // 2))
    env = {"CONTRACKT_WORKERS": share, **(extra or {})}
    with stack.production(tmp, ["A", "B"], workers=2, extra=env) as (s, (a, b)):
        return asyncio.run(scenario(s.url, a, b, scans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["embedded", "production"], default="embedded")
    parser.add_argument("--scans", type=int, default=10, help="copies of scan_hard.pdf (10 pages each) from A")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--text-slots", type=int, default=None, help="CONTRACKT_OCR_TEXT_SLOTS (default: its default)")
    parser.add_argument("--compare", action="store_true", help="run with text slots off, then at the default")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    args = parser.parse_args()
    runs: list[int | None] = [0, None] if args.compare else [args.text_slots]
    rows = []
    for slots in runs:
        tmp = Path(tempfile.mkdtemp(prefix="ctk-fair-"))
        extra = {} if slots is None else {"CONTRACKT_OCR_TEXT_SLOTS": str(slots)}
        try:
            before = load()
            row = (embedded if args.mode == "embedded" else production)(tmp, args.scans, extra)
            row.update(
                mode=args.mode,
                text_slots="default" if slots is None else slots,
                load_before=before,
                load_after=load(),
                cpus=os.cpu_count(),
            )
        finally:
            if args.keep:
                print(f"logs: {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows if args.compare else rows[0], indent=2))


if __name__ == "__main__":
    main()
