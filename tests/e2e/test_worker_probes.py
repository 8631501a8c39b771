"""A real `contrackt worker` process: its listener (CONTRACKT_WORKER_LISTEN) answers the probes an
orchestrator sends and Prometheus' scrape, stops with the worker, and a taken port fails at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_serve import BIN, env_for, free_port
from tests.scrape import exported_names

pytestmark = pytest.mark.e2e


def start_worker(home: Path, listen: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**env_for(home), "CONTRACKT_WORKERS": "1", "CONTRACKT_WORKER_LISTEN": listen}
    with log.open("ab") as sink:
        return subprocess.Popen([str(BIN), "worker"], env=env, stdout=sink, stderr=sink, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_worker_serves_live_ready_and_metrics_then_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    proc = start_worker(tmp_path / "home", f"127.0.0.1:{port}", log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the worker exited early:\n{log.read_text()[-3000:]}"
            try:
                ready = httpx.get(f"{base}/v1/health/ready", timeout=3)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, log.read_text()[-3000:]
        assert ready.json()["checks"] == {"database": "ok", "queue": "ok", "storage": "ok", "ocr": "ok"}
        assert httpx.get(f"{base}/v1/health/live", timeout=3).json() == {"status": "ok"}
        metrics = httpx.get(f"{base}/metrics", timeout=3)
        assert metrics.status_code == 200
        names = exported_names(metrics.text)
        for name in ("contrackt_jobs_finished_total", "contrackt_page_seconds_bucket", "contrackt_queue_depth"):
            assert name in names
        assert httpx.get(f"{base}/v1/extract", timeout=3).status_code == 404  # only probes and metrics here

        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/v1/health/live", timeout=2)
    finally:
        stop(proc)


def test_a_taken_port_stops_the_worker_before_it_loads_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "worker.log"
        proc = start_worker(tmp_path / "home", f"127.0.0.1:{port}", log)
        try:
            started = time.monotonic()
            assert proc.wait(60) != 0
            assert time.monotonic() - started < 30
            assert "Address already in use" in log.read_text()
        finally:
            stop(proc)
