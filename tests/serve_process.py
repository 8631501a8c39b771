"""``contrackt serve`` as a child process of a test: started in its own session, waited for until
ready (its log's tail in the failure when it is not), stopped with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "contrackt"


def start_serve(env: dict[str, str], port: int, log: Path, timeout: float = 180) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"serve never became ready:\n{log.read_text()[-3000:]}")


def stop_serve(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 30) -> None:
    """``sig`` to the whole group (SIGTERM: a graceful shutdown), SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
