"""/metrics tells an operator what happened: jobs, pages, latencies, refusals, the queue, the keys.

Counters are process-wide, so each test compares a scrape before and after what it does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.metrics import set_tenant_label
from contrackt.ports.queue import QueueStats
from contrackt.queue_gauges import QUEUE_GAUGES, QueueGauges
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf
from tests.scrape import samples, total, value
from tests.unit.test_api import headers, new_tenant, wait_done


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def until(client: httpx.AsyncClient, check: Callable[[str], bool], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = await scrape(client)
        if check(text) or time.monotonic() > deadline:
            assert check(text), "the metrics never showed it"
            return text
        await asyncio.sleep(0.1)


def delta(before: str, after: str, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def fresh_gauges(monkeypatch: pytest.MonkeyPatch) -> QueueGauges:
    """Queue figures read at every scrape (the 10 s cache would hide what a test just did)."""
    monkeypatch.setattr(QUEUE_GAUGES, "ttl_s", 0.0)
    return QUEUE_GAUGES


async def test_metrics_move_when_jobs_run_fail_retry_and_are_refused(
    client: httpx.AsyncClient, container: Container, fresh_gauges: QueueGauges
) -> None:
    t = await new_tenant(container)
    h = headers(t)
    before = await scrape(client)
    ok = (await client.post("/v1/extract", headers=h, content=fake_pdf("um%PAGEdois"))).json()["job_id"]
    bad = (await client.post("/v1/extract", headers=h, content=fake_pdf("x", "corrupt"))).json()["job_id"]
    crash = (await client.post("/v1/extract", headers=h, content=fake_pdf("x", "crash"))).json()["job_id"]
    assert (await wait_done(client, ok, h))["status"] == "completed"
    assert (await wait_done(client, bad, h))["status"] == "failed"
    # retried twice (2 s, then 4 s of backoff), then dead-lettered
    assert (await wait_done(client, crash, h, timeout=30))["status"] == "failed"
    assert (await client.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=h)).status_code == 404
    after = await scrape(client)

    assert delta(before, after, "contrackt_jobs_submitted_total") == 3
    assert delta(before, after, "contrackt_jobs_finished_total", outcome="completed") == 1
    assert delta(before, after, "contrackt_jobs_finished_total", outcome="failed") == 2
    assert delta(before, after, "contrackt_job_failures_total", code="corrupt_pdf") == 1
    assert delta(before, after, "contrackt_job_failures_total", code="resource_limit") == 1
    assert delta(before, after, "contrackt_job_retries_total", code="resource_limit") == 2
    assert delta(before, after, "contrackt_jobs_dead_lettered_total", code="resource_limit") == 1
    assert delta(before, after, "contrackt_pages_total", source="text_layer") == 2
    assert delta(before, after, "contrackt_job_seconds_count") == 1
    assert delta(before, after, "contrackt_job_wait_seconds_count") == 5  # every claim: 1 + 1 + 3 attempts
    assert delta(before, after, "contrackt_requests_rejected_total", code="not_found", status="404") == 1
    assert delta(before, after, "contrackt_http_request_seconds_count", method="POST", route="/v1/extract") == 3
    # the queue's own figures, read from the backend at scrape time
    assert value(after, "contrackt_queue_dead_letters") == 1
    assert value(after, "contrackt_queue_stats_up") == 1
    assert 0 <= value(after, "contrackt_queue_stats_age_seconds") < 5
    # (the sweeper may have re-enqueued the job during its backoff: that copy drains at once)
    drained = await until(client, lambda text: value(text, "contrackt_queue_depth") == 0)
    assert value(drained, "contrackt_queue_oldest_message_age_seconds") == 0
    # no tenant id anywhere unless the operator asks for it
    assert [key for key in samples(after) if any(label == "tenant" for label, _ in key[1])] == []
    assert t["tenant_id"] not in after


@pytest.fixture
async def tenant_labelled(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    settings = embedded_settings(tmp_path / "home", metrics_tenant_label=True)
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
                yield http, c
    finally:
        await c.close()
        set_tenant_label(False)  # back to the default for every other test in this process


async def test_a_tenant_label_appears_only_when_the_operator_opts_in(
    tenant_labelled: tuple[httpx.AsyncClient, Container],
) -> None:
    client, container = tenant_labelled
    t = await new_tenant(container)
    h, tid = headers(t), t["tenant_id"]
    job = (await client.post("/v1/extract", headers=h, content=fake_pdf("um%PAGEdois"))).json()["job_id"]
    await wait_done(client, job, h)
    assert (await client.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=h)).status_code == 404
    assert (await client.get(f"/v1/jobs/{job}", headers={"X-API-Key": "ctk_wrong"})).status_code == 401
    text = await scrape(client)
    assert value(text, "contrackt_jobs_submitted_total", tenant=tid) == 1
    assert value(text, "contrackt_jobs_finished_total", outcome="completed", tenant=tid) == 1
    assert value(text, "contrackt_pages_total", source="text_layer", tenant=tid) == 2
    assert value(text, "contrackt_requests_rejected_total", code="not_found", status="404", tenant=tid) == 1
    # refused before the key was known: no tenant to name
    assert value(text, "contrackt_requests_rejected_total", code="unauthorized", status="401", tenant="") == 1
    # only those few counters carry it; histograms and gauges never do
    labelled = {
        name.removesuffix("_created").removesuffix("_total") + "_total"
        for name, labels in samples(text)
        if any(k == "tenant" for k, _ in labels)
    }
    assert labelled == {
        "contrackt_jobs_submitted_total",
        "contrackt_jobs_finished_total",
        "contrackt_pages_total",
        "contrackt_requests_rejected_total",
    }


async def test_a_down_queue_backend_neither_slows_nor_fails_a_scrape(
    client: httpx.AsyncClient, container: Container, fresh_gauges: QueueGauges, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = await scrape(client)
    assert value(good, "contrackt_queue_stats_up") == 1
    calls = 0

    async def hangs() -> QueueStats:
        nonlocal calls
        calls += 1
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    monkeypatch.setattr(container.queue, "stats", hangs)
    monkeypatch.setattr(fresh_gauges, "timeout_s", 0.3)
    started = time.monotonic()
    down = await scrape(client)
    assert time.monotonic() - started < 2.0
    assert value(down, "contrackt_queue_stats_up") == 0
    assert value(down, "contrackt_queue_depth") == 0  # the last figures stay on show...
    assert value(down, "contrackt_queue_stats_age_seconds") > 0  # ...saying how old they are
    assert delta(good, down, "contrackt_queue_stats_failures_total") == 1
    # within the cache window a failed read is not tried again: every scrape stays fast
    monkeypatch.setattr(fresh_gauges, "ttl_s", 60.0)
    started = time.monotonic()
    for _ in range(3):
        await scrape(client)
    assert time.monotonic() - started < 1.0
    assert calls == 1


async def test_queue_figures_are_read_once_per_cache_window() -> None:
    reads = 0

    class Queue:
        async def stats(self) -> QueueStats:
            nonlocal reads
            reads += 1
            return QueueStats(depth=7, dead_letters=2, oldest_age_s=None)

    now = [100.0]
    gauges = QueueGauges(ttl_s=10.0, timeout_s=1.0, clock=lambda: now[0])
    queue = Queue()
    assert [m.samples for m in gauges.collect()] == [[]] * 6  # nothing asked yet: names only
    await gauges.refresh(queue)  # type: ignore[arg-type]
    now[0] += 9.0
    await gauges.refresh(queue)  # type: ignore[arg-type]
    assert reads == 1
    figures = {m.name: [s.value for s in m.samples] for m in gauges.collect()}
    assert figures["contrackt_queue_depth"] == [7.0]
    assert figures["contrackt_queue_dead_letters"] == [2.0]
    assert figures["contrackt_queue_oldest_message_age_seconds"] == []  # the backend cannot tell: absent, not 0
    assert figures["contrackt_queue_stats_age_seconds"] == [9.0]
    now[0] += 1.5
    await gauges.refresh(queue)  # type: ignore[arg-type]
    assert reads == 2


async def test_key_provider_and_receipt_key_failures_are_counted(
    client: httpx.AsyncClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await scrape(client)
    with pytest.raises(Exception):  # noqa: B017 - whatever the provider raises, it is counted
        await container.keys.unwrap(b"not a wrapped key", "contrackt|t|data|1")

    async def no_key() -> bytes:
        raise OSError("the mounted key is gone")

    monkeypatch.setattr(container.signer, "public_key_raw", no_key)
    r = await client.get("/v1/receipt-key")
    assert r.status_code == 503 and r.json()["code"] == "receipt_key_unavailable"
    after = await scrape(client)
    assert delta(before, after, "contrackt_key_provider_failures_total", provider="local", operation="unwrap") == 1
    assert delta(before, after, "contrackt_receipt_key_failures_total") == 1
    assert delta(before, after, "contrackt_requests_rejected_total", code="receipt_key_unavailable", status="503") == 1
    assert total(after, "contrackt_http_requests_total", status="503") >= 1
