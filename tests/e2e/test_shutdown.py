"""Graceful shutdown: SIGTERM a real `contrackt serve` while a job runs and an upload is in flight.

* the upload that was in flight when SIGTERM arrived still gets its 202;
* new connections are refused once the server is stopping;
* the process exits within CONTRACKT_SHUTDOWN_GRACE_SECONDS (plus start-up slack);
* the running job either finished or was handed back (no row left `processing`);
* after a restart every job completes exactly once (one COMPLETED audit row each)
  and no document is left in storage.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import corpus_path
from tests.e2e.test_serve import cli, env_for, free_port, wait_all
from tests.serve_process import start_serve, stop_serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GRACE_S = 4


def start(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = env_for(home)
    env["CONTRACKT_SHUTDOWN_GRACE_SECONDS"] = str(GRACE_S)
    return start_serve(env, port, log)


def job_states(home: Path) -> dict[str, str]:
    db = sqlite3.connect(home / "contrackt.db")
    try:
        return {str(j).replace("-", ""): s for j, s in db.execute("SELECT id, status FROM jobs")}
    finally:
        db.close()


def slow_body(pdf: bytes, first_chunk_sent: threading.Event) -> Iterator[bytes]:
    step = max(1, len(pdf) // 8)
    for i in range(0, len(pdf), step):
        yield pdf[i : i + step]
        first_chunk_sent.set()
        time.sleep(0.25)


def test_sigterm_finishes_or_releases_then_every_job_completes_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a = json.loads(cli(home, "tenant", "create", "alpha", "--json"))
    h = {"X-API-Key": a["api_key"]}
    scan = corpus_path("synthetic", "scan_hard.pdf").read_bytes()
    born = corpus_path("synthetic", "born_digital.pdf").read_bytes()
    log = tmp_path / "serve.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    queued: dict[str, dict[str, str]] = {}
    proc = start(home, port, log)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            for data in (scan, scan, born):
                r = client.post("/v1/extract", headers=h, content=data)
                assert r.status_code == 202, r.text
                queued[r.json()["job_id"]] = h
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [client.get(f"/v1/jobs/{j}", headers=h).json()["status"] for j in queued]
                if "processing" in states:
                    break
                time.sleep(0.2)
            assert "processing" in states

        # An upload in flight (body still streaming) when SIGTERM arrives.
        sent = threading.Event()
        answer: dict[str, object] = {}

        def upload() -> None:
            try:
                with httpx.Client(base_url=base, timeout=60) as c:
                    r = c.post(
                        "/v1/extract",
                        headers={**h, "Content-Type": "application/pdf"},
                        content=slow_body(born, sent),
                    )
                    answer["status"] = r.status_code
                    answer["body"] = r.json()
            except Exception as exc:
                answer["error"] = repr(exc)

        uploader = threading.Thread(target=upload)
        uploader.start()
        assert sent.wait(10)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        refused = False
        try:
            httpx.get(f"{base}/v1/health/live", timeout=2)
        except httpx.HTTPError:
            refused = True
        proc.wait(GRACE_S + 20)
        exit_s = time.monotonic() - t0
        uploader.join(30)
    finally:
        stop_serve(proc, signal.SIGKILL, grace=10)
    print(f"\nSIGTERM -> exit in {exit_s:.1f}s (grace {GRACE_S}s); in-flight upload: {answer.get('status')}")
    assert proc.returncode is not None
    assert exit_s <= GRACE_S + 20
    assert refused, "the stopping server still accepted a new connection"
    assert answer.get("status") == 202, answer
    queued[str(answer["body"]["job_id"])] = h  # type: ignore[index]
    after_stop = job_states(home)
    print(f"states after SIGTERM: {sorted(after_stop.values())}")
    assert "processing" not in after_stop.values(), "a job was left processing instead of finished/released"

    port = free_port()
    proc = start(home, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            done = wait_all(client, queued, timeout=240)
            assert {b["status"] for b in done.values()} == {"completed"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            stop_serve(proc, signal.SIGKILL, grace=10)
    db = sqlite3.connect(home / "contrackt.db")
    try:
        rows = db.execute(
            "SELECT job_id, count(*) FROM audit_logs WHERE action = 'COMPLETED' GROUP BY job_id"
        ).fetchall()
    finally:
        db.close()
    assert {str(j).replace("-", ""): n for j, n in rows} == {j.replace("-", ""): 1 for j in queued}
    assert list((home / "blobs").rglob("*.enc")) == []
