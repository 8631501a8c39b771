"""End to end: the real `contrackt serve` on a free port, real OCR, SIGKILL and restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import corpus_path
from tests.helpers_cer import corpus_cer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent / "contrackt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(
        CONTRACKT_HOME=str(home),
        CONTRACKT_WORKERS="2",
        CONTRACKT_RATE_LIMIT_STATUS="100000/minute",
        CONTRACKT_RATE_LIMIT_EXTRACT="100000/minute",
        CONTRACKT_SWEEP_INTERVAL_SECONDS="1",
        CONTRACKT_LOG_FORMAT="json",
    )
    return env


def cli(home: Path, *args: str) -> str:
    out = subprocess.run([str(BIN), *args], env=env_for(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@contextmanager
def serve(home: Path, port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``env``: settings over env_for's (e.g. one worker for a test that sends a page at a time)."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port)],
            env={**env_for(home), **(env or {})},
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"serve exited early:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"serve never became ready:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return kids + [g for k in kids for g in descendants(k)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_all(client: httpx.Client, jobs: dict[str, dict[str, str]], timeout: float) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(jobs) and time.monotonic() < deadline:
        for job_id, h in jobs.items():
            if job_id in done:
                continue
            body = client.get(f"/v1/jobs/{job_id}", headers=h).json()
            if body["status"] in ("completed", "failed"):
                done[job_id] = body
        time.sleep(0.3)
    missing = set(jobs) - set(done)
    assert not missing, f"{len(missing)} jobs never finished"
    return done


def ground_truth() -> list[str]:
    return [corpus_path("synthetic", "gt", f"page_{n:02d}.txt").read_text() for n in range(1, 11)]


def test_serve_quality_isolation_and_crash_recovery(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a = json.loads(cli(home, "tenant", "create", "alpha", "--json"))
    b = json.loads(cli(home, "tenant", "create", "beta", "--json"))
    ha, hb = {"X-API-Key": a["api_key"]}, {"X-API-Key": b["api_key"]}
    port = free_port()
    log = tmp_path / "serve.log"
    names = ("born_digital", "scan_mild", "scan_hard")
    docs = {name: corpus_path("synthetic", f"{name}.pdf").read_bytes() for name in names}
    gt = ground_truth()

    with serve(home, port, log), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        # 1. Quality through the HTTP API.
        jobs = {}
        for name, data in docs.items():
            r = client.post("/v1/extract", headers=ha, files={"file": (f"{name}.pdf", data, "application/pdf")})
            assert r.status_code == 202, r.text
            jobs[name] = r.json()["job_id"]
        wait_all(client, {j: ha for j in jobs.values()}, timeout=300)
        cers = {}
        for name, job_id in jobs.items():
            result = client.get(f"/v1/jobs/{job_id}/result", headers=ha).json()
            assert len(result["pages"]) == 10
            cers[name] = corpus_cer(zip([p["text"] for p in result["pages"]], gt, strict=True))
        print(f"\nCER through the API: {json.dumps({k: round(v * 100, 3) for k, v in cers.items()})} (%)")
        assert cers["born_digital"] == 0.0
        assert cers["scan_mild"] <= 0.01
        assert cers["scan_hard"] <= 0.02
        # 2. Isolation: beta cannot see alpha's job, not even its existence.
        r = client.get(f"/v1/jobs/{jobs['born_digital']}/result", headers=hb)
        assert r.status_code == 404


def test_sigkill_restart_completes_every_job_exactly_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    a = json.loads(cli(home, "tenant", "create", "alpha", "--json"))
    b = json.loads(cli(home, "tenant", "create", "beta", "--json"))
    ha, hb = {"X-API-Key": a["api_key"]}, {"X-API-Key": b["api_key"]}
    scan = corpus_path("synthetic", "scan_hard.pdf").read_bytes()
    born = corpus_path("synthetic", "born_digital.pdf").read_bytes()
    log = tmp_path / "serve.log"
    port = free_port()
    queued: dict[str, dict[str, str]] = {}
    with serve(home, port, log) as proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for i in range(8):
            h = ha if i % 2 == 0 else hb
            r = client.post("/v1/extract", headers=h, content=scan if i < 4 else born)
            assert r.status_code == 202
            queued[r.json()["job_id"]] = h
        # wait until OCR is under way, then kill everything at once
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [client.get(f"/v1/jobs/{j}", headers=h).json()["status"] for j, h in queued.items()]
            if "processing" in states:
                break
            time.sleep(0.2)
        assert "processing" in states
        children = descendants(proc.pid)
        assert len(children) >= 2, "expected OCR child processes"
        # Kill only the server process, as the OOM killer would: its children must not linger.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        unfinished_at_kill = sum(s in ("pending", "processing") for s in states)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.2)
        survivors = [pid for pid in children if alive(pid)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert survivors == [], "OCR children outlived the killed server"
    assert unfinished_at_kill >= 4

    port = free_port()
    with serve(home, port, log), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        done = wait_all(client, queued, timeout=300)
        assert {body["status"] for body in done.values()} == {"completed"}
        for job_id, h in queued.items():
            result = client.get(f"/v1/jobs/{job_id}/result", headers=h).json()
            assert len(result["pages"]) == 10
    db = sqlite3.connect(home / "contrackt.db")
    try:
        rows = db.execute(
            "SELECT job_id, count(*) FROM audit_logs WHERE action = 'COMPLETED' GROUP BY job_id"
        ).fetchall()
    finally:
        db.close()
    completed = {str(job_id).replace("-", ""): n for job_id, n in rows}
    assert {j.replace("-", ""): 1 for j in queued} == completed
    assert list((home / "blobs").rglob("*.enc")) == []
