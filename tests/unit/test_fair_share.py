"""Fair share (embedded backends, fake extractor): per-tenant backlog limit at intake, per-tenant
in-flight cap at the claim, round-robin across tenants, and what a refused tenant is told."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.domain.jobs import JobMessage, JobStatus
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, RecordingDelivery, fake_pdf


@dataclass
class App:
    http: httpx.AsyncClient
    c: Container


async def _app(home: Path, *, run_worker: bool, **overrides: object) -> AsyncIterator[App]:
    s = embedded_settings(home, **overrides)
    await asyncio.to_thread(upgrade, s.db_url)
    c = build(s)
    fake = FakeExtractor()
    app = create_app(container=c, run_worker=run_worker, worker_factory=lambda c: WorkerRuntime(c, fake))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield App(http, c)
    finally:
        await c.close()


@pytest.fixture
async def no_worker(tmp_path: Path) -> AsyncIterator[App]:
    # No worker: jobs stay pending, so backlogs only grow.
    async for app in _app(tmp_path / "home", run_worker=False, tenant_max_backlog=3, max_queue_depth=6):
        yield app


async def tenant(c: Container, name: str) -> tuple[str, dict[str, str]]:
    key = await c.tenants.create(name)
    return key.tenant_id, {"X-API-Key": key.api_key}


async def submit(http: httpx.AsyncClient, h: dict[str, str], text: str, *faults: str) -> httpx.Response:
    return await http.post("/v1/extract", headers=h, content=fake_pdf(text, *faults))


def states_no_count(body: dict[str, object]) -> None:
    """A refusal tells the caller what to do, never a count of anyone's jobs."""
    for key in ("title", "detail"):
        assert not re.search(r"\d", str(body[key])), body


# ----------------------------------------------------------------------------- intake


async def test_a_tenant_over_its_backlog_gets_429_and_others_are_unaffected(no_worker: App) -> None:
    http, c = no_worker.http, no_worker.c
    a_id, a = await tenant(c, "greedy")
    _, b = await tenant(c, "other")
    assert [(await submit(http, a, f"a{i}")).status_code for i in range(3)] == [202] * 3
    r = await submit(http, a, "a3")
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "backlog_full"
    # Nothing of the tenant's finished in the window: come back at the cap.
    assert r.headers["Retry-After"] == "300"
    states_no_count(r.json())
    # Another tenant is not affected by the greedy one's backlog.
    assert (await submit(http, b, "b0")).status_code == 202
    # Raise the greedy tenant's own limit (as `contrackt tenant limits ID --max-backlog 4` does).
    await c.tenants.set_limits(a_id, max_inflight=None, max_backlog=4)
    assert (await submit(http, a, "a4")).status_code == 202
    assert (await submit(http, a, "a5")).status_code == 429
    # 0 pauses the tenant's intake.
    await c.tenants.set_limits(a_id, max_inflight=None, max_backlog=0)
    assert (await submit(http, a, "a6")).json()["code"] == "backlog_full"


async def test_the_service_wide_503_states_no_count(no_worker: App) -> None:
    http, c = no_worker.http, no_worker.c
    tenants = [(await tenant(c, f"t{i}"))[1] for i in range(3)]
    for h in tenants:
        for i in range(2):
            assert (await submit(http, h, f"d{i}")).status_code == 202
    _, late = await tenant(c, "late")
    r = await submit(http, late, "refused")
    assert r.status_code == 503
    assert r.json()["code"] == "overloaded"
    assert int(r.headers["Retry-After"]) >= 1
    states_no_count(r.json())


async def test_backlog_retry_after_follows_the_tenants_own_throughput(no_worker: App) -> None:
    from datetime import timedelta

    from contrackt.domain.ids import new_id
    from contrackt.domain.jobs import Job

    http, c = no_worker.http, no_worker.c
    a_id, a = await tenant(c, "busy")
    b_id, _ = await tenant(c, "fast")
    now = c.clock.now()
    async with c.uow(b_id) as uow:  # another tenant's throughput is not this tenant's
        for n in range(600):
            at = now - timedelta(seconds=1 + n * 0.4)
            await uow.jobs.add(
                Job(id=new_id(), tenant_id=b_id, status=JobStatus.COMPLETED, created_at=at, completed_at=at)
            )
    async with c.uow(a_id) as uow:  # 30 of its own in five minutes: one every 10 s
        for n in range(30):
            at = now - timedelta(seconds=5 + n * 9.5)
            await uow.jobs.add(
                Job(id=new_id(), tenant_id=a_id, status=JobStatus.COMPLETED, created_at=at, completed_at=at)
            )
    for i in range(3):
        assert (await submit(http, a, f"d{i}")).status_code == 202
    r = await submit(http, a, "refused")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "10"


# ----------------------------------------------------------------------------- the claim


async def _pending(c: Container, tenant_id: str, n: int, *faults: str) -> list[JobMessage]:
    out = []
    key = await c.tenants.create_key(tenant_id)
    p = await c.tenants.authenticate(key.api_key)
    for i in range(n):
        accepted = await c.intake.submit(p, fake_pdf(f"doc {i}", *faults))
        job = accepted.job
        assert job.blob_key is not None
        out.append(JobMessage(job.id, tenant_id, job.blob_key))
    return out


async def _job(c: Container, tenant_id: str, job_id: str):  # type: ignore[no-untyped-def]
    async with c.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
    assert job is not None
    return job


async def test_a_tenant_at_its_inflight_cap_is_deferred_not_failed(container: Container) -> None:
    a_id = (await container.tenants.create("a")).tenant_id
    await container.tenants.set_limits(a_id, max_inflight=1, max_backlog=None)
    first, second = await _pending(container, a_id, 2, "slow")
    processing = container.attach_extractor(FakeExtractor())
    running = asyncio.create_task(processing.handle(RecordingDelivery(first)))
    for _ in range(100):
        if (await _job(container, a_id, first.job_id)).status is JobStatus.PROCESSING:
            break
        await asyncio.sleep(0.02)
    held = RecordingDelivery(second)
    await processing.handle(held)
    assert held.events == ["defer-hold"], "at the cap: back later, the tenant held, not a failure"
    job = await _job(container, a_id, second.job_id)
    assert (job.status, job.attempts) == (JobStatus.PENDING, 0)
    await running
    assert (await _job(container, a_id, first.job_id)).status is JobStatus.COMPLETED
    # A slot is free again: the same message is claimed now, as attempt 1.
    again = RecordingDelivery(second)
    await processing.handle(again)
    assert again.events[-1] == "ack"
    job = await _job(container, a_id, second.job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1)


async def test_a_job_held_by_a_live_worker_is_looked_at_again_later(container: Container) -> None:
    a_id = (await container.tenants.create("a")).tenant_id
    (message,) = await _pending(container, a_id, 1)
    now = container.clock.now()
    from datetime import timedelta

    async with container.uow(a_id) as uow:
        assert await uow.jobs.claim(message.job_id, now, now + timedelta(seconds=30))
    processing = container.attach_extractor(FakeExtractor())
    duplicate = RecordingDelivery(message)
    await processing.handle(duplicate)
    assert duplicate.events == ["defer"]
    # Its worker died: once the lease has run out, the claim takes the job over.
    async with container.uow(a_id) as uow:
        await uow.jobs.extend_lease(message.job_id, 1, now - timedelta(seconds=1))
    again = RecordingDelivery(message)
    await processing.handle(again)
    job = await _job(container, a_id, message.job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 2)


async def test_no_tenant_exceeds_its_cap_across_concurrent_workers(tmp_path: Path) -> None:
    async for app in _app(tmp_path / "home", run_worker=True, workers=4, tenant_max_inflight=1):
        c = app.c
        a_id, a = await tenant(c, "capped")
        b_id, b = await tenant(c, "other")
        await c.tenants.set_limits(b_id, max_inflight=2, max_backlog=None)
        jobs = [(await submit(app.http, a, f"a{i}", "slow")).json()["job_id"] for i in range(3)]
        jobs += [(await submit(app.http, b, f"b{i}", "slow")).json()["job_id"] for i in range(3)]
        seen = {a_id: 0, b_id: 0}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with c.uow(system=True) as uow:
                rows = [await uow.jobs.get(t, j) for t in (a_id, b_id) for j in jobs]
            live = [r for r in rows if r is not None]
            for t in seen:
                seen[t] = max(seen[t], sum(r.status is JobStatus.PROCESSING and r.tenant_id == t for r in live))
            if all(r.status is JobStatus.COMPLETED for r in live):
                break
            await asyncio.sleep(0.05)
        assert all(r.status is JobStatus.COMPLETED for r in live)
        assert seen == {a_id: 1, b_id: 2}, "the default cap, and a tenant's own override"
        assert {r.attempts for r in live} == {1}, "waiting for a slot never counts as an attempt"


# ----------------------------------------------------------------------------- round-robin end to end


async def test_a_tenant_behind_anothers_backlog_is_served_next(tmp_path: Path) -> None:
    """Tenant A submits 12 one-second jobs to two workers, then tenant B one: B is done after
    at most about one of A's jobs, not after all twelve (a FIFO's six seconds)."""
    async for app in _app(tmp_path / "home", run_worker=True, workers=2):
        _, a = await tenant(app.c, "a")
        _, b = await tenant(app.c, "b")
        a_jobs = [(await submit(app.http, a, f"a{i}", "slow")).json()["job_id"] for i in range(12)]
        await asyncio.sleep(0.3)  # A's work is under way
        started = time.monotonic()
        b_job = (await submit(app.http, b, "b")).json()["job_id"]
        while (await app.http.get(f"/v1/jobs/{b_job}", headers=b)).json()["status"] != "completed":
            assert time.monotonic() - started < 30
            await asyncio.sleep(0.02)
        latency = time.monotonic() - started
        states = [(await app.http.get(f"/v1/jobs/{j}", headers=a)).json()["status"] for j in a_jobs]
        a_left = sum(s != "completed" for s in states)
        print(f"\nfairness (memory queue, 2 workers): B done in {latency:.2f}s with {a_left} of A's 12 unfinished")
        assert a_left >= 8, states


async def test_the_spare_consumer_starts_another_tenants_job_at_once(tmp_path: Path) -> None:
    """One regular consumer busy with A's three-second job and A's backlog behind it: B's job
    starts on the worker's spare consumer without waiting for A's job to end."""
    async for app in _app(tmp_path / "home", run_worker=True, workers=1):
        _, a = await tenant(app.c, "a")
        _, b = await tenant(app.c, "b")
        a_jobs = [(await submit(app.http, a, f"a{i}%PAGE2%PAGE3", "slow")).json()["job_id"] for i in range(3)]
        while (await app.http.get(f"/v1/jobs/{a_jobs[0]}", headers=a)).json()["status"] != "processing":
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        states = [(await app.http.get(f"/v1/jobs/{j}", headers=a)).json()["status"] for j in a_jobs]
        assert states == ["processing", "pending", "pending"], "the spare never takes the busy tenant's work"
        started = time.monotonic()
        b_job = (await submit(app.http, b, "b")).json()["job_id"]
        while (await app.http.get(f"/v1/jobs/{b_job}", headers=b)).json()["status"] != "completed":
            assert time.monotonic() - started < 30
            await asyncio.sleep(0.02)
        latency = time.monotonic() - started
        first = (await app.http.get(f"/v1/jobs/{a_jobs[0]}", headers=a)).json()["status"]
        print(f"\nspare consumer (memory queue, 1 worker): B done in {latency:.2f}s while A's job was {first}")
        assert first == "processing", "B did not wait for A's job in hand"


def test_retry_after_is_told_in_coarse_steps() -> None:
    from contrackt.services.intake import RETRY_AFTER_STEPS, coarse_retry_after

    assert [coarse_retry_after(s) for s in (1, 2, 3, 7, 11, 16, 44, 61, 150, 299, 300)] == [
        1, 2, 5, 10, 15, 30, 60, 120, 180, 300, 300,
    ]  # fmt: skip
    assert all(coarse_retry_after(s) in RETRY_AFTER_STEPS for s in range(1, 400))
