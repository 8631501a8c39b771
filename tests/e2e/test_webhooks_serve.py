"""Acceptance: a real `contrackt serve` SIGKILLed after a job completed and before its webhook went
out loses nothing: started again, it delivers the event once, signed, to a loopback receiver.

The dispatcher's first attempt is held by a setting (CONTRACKT_WEBHOOK_FIRST_ATTEMPT_DELAY_SECONDS),
so the kill lands between completion and delivery every time, not by luck."""

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
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.conftest import corpus_path
from tests.e2e.test_serve import BIN, env_for, free_port
from tests.serve_process import start_serve, stop_serve
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOLD_S = 8.0


def hook_env(home: Path) -> dict[str, str]:
    env = env_for(home)
    env.update(
        CONTRACKT_WEBHOOK_ALLOW_PRIVATE="1",
        CONTRACKT_WEBHOOK_FIRST_ATTEMPT_DELAY_SECONDS=str(HOLD_S),
        CONTRACKT_WEBHOOK_POLL_SECONDS="0.2",
    )
    return env


def cli(home: Path, *args: str) -> str:
    out = subprocess.run([str(BIN), *args], env=hook_env(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def start(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return start_serve(hook_env(home), port, log)


def outbox(home: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(home / "contrackt.db")
    try:
        return [(str(r[0]), int(r[1])) for r in db.execute("SELECT type, attempts FROM webhook_events")]
    finally:
        db.close()


def test_a_restart_between_completion_and_delivery_loses_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "serve.log"
    t = json.loads(cli(home, "tenant", "create", "alpha", "--json"))
    h = {"X-API-Key": t["api_key"]}
    with Receiver() as rx:
        hook = json.loads(cli(home, "webhook", "add", t["tenant_id"], rx.url(), "--event", "job.completed"))
        port = free_port()
        proc = start(home, port, log)
        try:
            base = f"http://127.0.0.1:{port}"
            pdf = corpus_path("synthetic", "born_digital.pdf").read_bytes()
            r = httpx.post(f"{base}/v1/extract", headers=h, content=pdf, timeout=60)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            deadline = time.monotonic() + 60
            while httpx.get(f"{base}/v1/jobs/{job_id}", headers=h, timeout=10).json()["status"] != "completed":
                assert time.monotonic() < deadline, "the job never completed"
                time.sleep(0.05)
            completed_at = time.monotonic()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed_after = time.monotonic() - completed_at
        finally:
            stop_serve(proc)
        assert killed_after < HOLD_S, "the kill came too late to fall before the first attempt"
        assert rx.all() == [], "the event went out before the kill"
        assert outbox(home) == [("job.completed", 0)]  # committed with the completion, never attempted

        port = free_port()
        proc = start(home, port, log)
        try:
            [got] = rx.wait_sync(1, timeout=HOLD_S + 30)
            time.sleep(2.0)  # a duplicate would come within the poll interval
            assert len(rx.all()) == 1
            deliveries = httpx.get(
                f"http://127.0.0.1:{port}/v1/webhooks/{hook['id']}/deliveries", headers=h, timeout=10
            ).json()["deliveries"]
        finally:
            stop_serve(proc)
    payload = StandardWebhook(hook["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "job.completed"
    assert (payload["data"]["job_id"], payload["data"]["status"]) == (job_id, "completed")
    assert [(d["attempt"], d["outcome"], d["status_code"]) for d in deliveries] == [(1, "delivered", 204)]
    assert outbox(home) == []
    print(f"\nkilled {killed_after:.2f}s after completion; delivered once after the restart")
