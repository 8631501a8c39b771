"""OCR children leave the host's network before they parse anything.

A hostile PDF that found a bug in PDFium or an image decoder would run inside
an OCR child; there it must not reach the services beside it (PostgreSQL,
Redis, the cloud metadata endpoint) or the internet.  These tests open a
listening socket on 127.0.0.1 and show that a process which has called
``isolate_network`` cannot connect to it while an ordinary one can, that the
pool's children report the isolation, and that ``required`` refuses to start
without it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.sandbox import network_policy

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import socket, sys
from contrackt.adapters.ocr.sandbox import network_policy
print(network_policy(sys.argv[2]))
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    print("connected")
except OSError as exc:
    print("blocked", exc.errno)
"""


@pytest.fixture
def listener() -> Iterator[int]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        yield int(srv.getsockname()[1])
    finally:
        srv.close()


def _probe(port: int, mode: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(port), mode], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return out.stdout.split("\n")


def test_an_isolated_process_cannot_reach_a_service_on_the_host(listener: int) -> None:
    status, outcome = _probe(listener, "auto")[:2]
    if status.startswith("unavailable"):
        pytest.fail(
            f"this machine does not let a process leave the network ({status}): run the tests as root "
            "or with unprivileged user namespaces enabled"
        )
    assert status in ("netns", "userns+netns")
    assert outcome.startswith("blocked"), outcome
    # the same probe without isolation does connect: the listener is real
    assert _probe(listener, "off")[:2] == ["off", "connected"]


def test_required_refuses_to_start_without_isolation_and_off_never_tries() -> None:
    with pytest.raises(RuntimeError, match="required but unavailable: Operation not permitted"):
        network_policy("required", isolate=lambda: "unavailable: Operation not permitted")
    assert network_policy("auto", isolate=lambda: "unavailable: x") == "unavailable: x"
    assert network_policy("required", isolate=lambda: "netns") == "netns"

    def boom() -> str:
        raise AssertionError("off must not try")

    assert network_policy("off", isolate=boom) == "off"
    with pytest.raises(ValueError, match="network_isolation"):
        ProcessPoolExtractor(workers=1, engine="tesseract", engines=[], network_isolation="maybe")


@pytest.mark.parametrize(("mode", "expected"), [("required", ("netns", "userns+netns")), ("off", ("off",))])
def test_pool_children_report_their_network(mode: str, expected: tuple[str, ...]) -> None:
    pool = ProcessPoolExtractor(workers=1, engine="tesseract", engines=[], network_isolation=mode)
    asyncio.run(pool.start())
    try:
        assert pool.network in expected
    finally:
        asyncio.run(pool.close())
