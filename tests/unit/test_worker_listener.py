"""`contrackt worker`'s listener: liveness, readiness and /metrics over a real socket, with the real
OCR pool doing the work (children forked, pages timed, a child that breaks the protocol counted)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.ocr.fault_engines import FAULT_ENV
from contrackt.adapters.ocr.pool import ProcessPoolExtractor
from contrackt.adapters.ocr.worker_child import WARM_UP_PDF
from contrackt.api.app import create_app
from contrackt.bootstrap import build
from contrackt.domain.errors import ResourceLimit, SandboxViolation
from contrackt.ports.extractor import ExtractOptions
from contrackt.worker.listener import parse_worker_listen, worker_listener
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import corpus_path, embedded_settings
from tests.e2e.test_serve import free_port
from tests.scrape import value
from tests.unit.test_api import headers, new_tenant, wait_done


def test_the_listen_setting_takes_off_or_an_address() -> None:
    assert parse_worker_listen("off") is None
    assert parse_worker_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_worker_listen("[::1]:9100") == ("::1", 9100)
    for bad in ("public", "9100", "host:", "host:70000"):
        with pytest.raises(ValueError, match="CONTRACKT_WORKER_LISTEN"):
            parse_worker_listen(bad)


async def _get(http: httpx.AsyncClient, path: str) -> tuple[int, Any]:
    r = await http.get(path)
    return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text)


@pytest.mark.slow
async def test_the_worker_listener_answers_probes_and_metrics_over_a_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_ENV, "1")  # the pool also offers the test engines (a child that forges a reply)
    settings = embedded_settings(tmp_path / "home", workers=1, worker_listen=f"127.0.0.1:{free_port()}")
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    runtime = WorkerRuntime(c)  # the real pool, as `contrackt worker` builds it
    assert isinstance(runtime.extractor, ProcessPoolExtractor)
    listener = worker_listener(c, runtime)
    assert listener is not None
    await listener.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}", timeout=10) as http:
            # up before the models load: alive, not ready
            assert await _get(http, "/v1/health/live") == (200, {"status": "ok"})
            status, body = await _get(http, "/v1/health/ready")
            assert status == 503 and body["checks"]["ocr"] == "starting"
            before = (await http.get("/metrics")).text

            await runtime.start(relay=True)
            status, body = await _get(http, "/v1/health/ready")
            assert status == 200, body
            assert body["checks"] == {"database": "ok", "queue": "ok", "storage": "ok", "ocr": "ok"}

            api = create_app(container=c)  # the API beside it, sharing the database and queue
            async with api.router.lifespan_context(api):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api") as client:
                    t = await new_tenant(c)
                    h = headers(t)
                    born_digital = corpus_path("synthetic", "born_digital.pdf").read_bytes()  # 10 pages
                    # one after the other: the born-digital one would otherwise be read in a text slot while
                    # the scan is read beside it, and on two cores each page's time is the other's too
                    for url, pdf in (("/v1/extract", born_digital), ("/v1/extract?mode=ocr", WARM_UP_PDF)):
                        job = (await client.post(url, headers=h, content=pdf)).json()["job_id"]
                        assert (await wait_done(client, job, h, timeout=120))["status"] == "completed"
            pool = runtime.extractor
            with pytest.raises(SandboxViolation):
                await pool.extract(WARM_UP_PDF + b"%FORGE:/nonexistent\n", ExtractOptions(engine="forge"))
            with pytest.raises(ResourceLimit):
                await pool.extract(WARM_UP_PDF, ExtractOptions(engine="crash"))
            after = (await http.get("/metrics")).text

            def moved(name: str, **labels: str) -> float:
                return value(after, name, **labels) - value(before, name, **labels)

            assert moved("contrackt_jobs_finished_total", outcome="completed") == 2
            assert moved("contrackt_pages_total", source="text_layer") == 10
            assert moved("contrackt_pages_total", source="ocr") == 1
            assert moved("contrackt_page_seconds_count", source="text_layer") == 10
            assert moved("contrackt_page_seconds_count", source="ocr") == 1
            # the times are labelled by how the page was read: an OCR page takes longer than a page read
            # from its text layer, on average (a CI run: 0.84 s against 0.09 s, the two jobs read at once)
            ocr_s, text_s = (moved("contrackt_page_seconds_sum", source=s) for s in ("ocr", "text_layer"))
            assert 0 < text_s / 10 < ocr_s
            assert moved("contrackt_job_seconds_count") == 2
            # every job forks children (inspection at intake, then extraction); two were lost
            assert moved("contrackt_ocr_children_spawned_total") >= 4
            assert moved("contrackt_ocr_child_restarts_total") == 2
            assert moved("contrackt_ocr_sandbox_violations_total") == 1
            assert value(after, "contrackt_ocr_child_peak_rss_bytes") > 10 * 2**20
            assert value(after, "contrackt_queue_depth") == 0

            # draining: still alive, no longer ready, the listener still answers
            await runtime.stop(5.0)
            assert (await http.get("/v1/health/ready")).status_code == 503
            assert (await http.get("/v1/health/live")).status_code == 200
    finally:
        await listener.stop()
        await c.close()
    async with httpx.AsyncClient(timeout=2) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{listener.port}/v1/health/live")
