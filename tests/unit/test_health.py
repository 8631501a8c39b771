"""Health probes: live and ready answer fast, report each check, and the OCR warm state."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from contrackt.api.routes import health
from contrackt.bootstrap import Container


async def test_live_and_ready_with_a_warm_worker(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/health/live")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await client.get("/v1/health/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "queue": "ok", "storage": "ok", "ocr": "ok"}
    assert body["ocr"] == {"engine": "rapidocr", "warm": True}
    assert (await client.get("/v1/health")).json() == body


async def test_ready_fails_fast_when_a_dependency_hangs(
    client: httpx.AsyncClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck(key: str) -> bool:
        await asyncio.sleep(60)
        return True

    async def broken() -> None:
        raise ConnectionError("database down")

    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.3)
    monkeypatch.setattr(container.blobs, "exists", stuck)
    monkeypatch.setattr(container.uow, "ping", broken)
    started = time.monotonic()
    r = await client.get("/v1/health/ready")
    assert time.monotonic() - started < 2.0
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["storage"] == "timeout"
    assert body["checks"]["database"] == "error"
    assert body["checks"]["queue"] == "ok"
    # liveness does not depend on adapters: the process is fine
    assert (await client.get("/v1/health/live")).status_code == 200


async def test_ready_reports_a_cold_ocr_engine_and_live_a_dead_loop(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    runtime = app.state.runtime
    runtime._ready = False
    r = await client.get("/v1/health/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["ocr"] == "starting"
    assert r.json()["ocr"]["warm"] is False
    runtime._ready = True
    victim = runtime._loops[0]
    victim.cancel()
    await asyncio.gather(victim, return_exceptions=True)
    r = await client.get("/v1/health/live")
    assert r.status_code == 503 and r.json() == {"status": "dead"}
