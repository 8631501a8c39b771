"""Acceptance, embedded mode with DEFAULT lease and sweep settings: `contrackt serve` SIGKILLed
in the middle of a job and started again finishes the job within 90 s of the kill (the boot
re-enqueues every unfinished job: the in-process queue died with the process)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import corpus_path
from tests.e2e.test_serve import BIN, free_port
from tests.serve_process import start_serve, stop_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECOVERY_LIMIT_S = 90.0


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(
        CONTRACKT_HOME=str(home),
        CONTRACKT_WORKERS="1",
        CONTRACKT_RATE_LIMIT_STATUS="100000/minute",
        CONTRACKT_LOG_FORMAT="json",
    )
    return env


def start(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return start_serve(env_for(home), port, log)


def three_page_scan(tmp: Path) -> bytes:
    import pypdfium2 as pdfium

    dst = pdfium.PdfDocument.new()
    dst.import_pages(pdfium.PdfDocument(corpus_path("synthetic", "scan_mild.pdf")), [0, 1, 2])
    dst.save(tmp / "scan3.pdf")
    return (tmp / "scan3.pdf").read_bytes()


def test_serve_sigkilled_mid_job_and_restarted_finishes_within_90s(tmp_path: Path) -> None:
    home = tmp_path / "home"
    create = [str(BIN), "tenant", "create", "alpha", "--json"]
    out = subprocess.run(create, env=env_for(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    h = {"X-API-Key": json.loads(out.stdout.strip().splitlines()[-1])["api_key"]}
    log = tmp_path / "serve.log"
    port = free_port()
    proc = start(home, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/v1/extract", headers=h, content=three_page_scan(tmp_path), timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/v1/jobs/{job_id}", headers=h, timeout=10).json()["status"] != "processing":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, OCR children included
        proc.wait(10)
        killed_at = time.monotonic()
    finally:
        stop_serve(proc)

    port = free_port()
    proc = start(home, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        while (body := httpx.get(f"{base}/v1/jobs/{job_id}", headers=h, timeout=10).json())["status"] != "completed":
            waited = time.monotonic() - killed_at
            assert body["status"] != "failed", body
            assert waited < RECOVERY_LIMIT_S, f"not done {waited:.0f}s after the kill:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        recovered = time.monotonic() - killed_at
        result = httpx.get(f"{base}/v1/jobs/{job_id}/result", headers=h, timeout=30).json()
        assert len(result["pages"]) == 3
    finally:
        stop_serve(proc)
    print(f"\nrecovery (serve, default settings): job completed {recovered:.1f}s after SIGKILL, restart included")
    db = sqlite3.connect(home / "contrackt.db")
    try:
        attempts, completed = db.execute(
            "SELECT attempts, (SELECT count(*) FROM audit_logs WHERE action = 'COMPLETED') FROM jobs"
        ).fetchone()
    finally:
        db.close()
    assert (attempts, completed) == (2, 1)
    assert list((home / "blobs").rglob("*.enc")) == []
