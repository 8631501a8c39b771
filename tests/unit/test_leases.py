"""Fast recovery (embedded backends, fake extractor): leases renewed by heartbeats, the queue's
claim renewed with them, a lost claim stops the work, an expired lease is taken over, and the
reconciler re-enqueues a waiting job without flooding the queue."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from contrackt.adapters.db.job_repository import SqlJobRepository
from contrackt.bootstrap import Container
from contrackt.domain.jobs import MAX_ATTEMPTS, Job, JobMessage, JobStatus
from contrackt.services.processing import ProcessingService
from contrackt.services.purge import REQUEUE_MAX, Sweeper, SweepReport
from tests.fakes import FakeExtractor, RecordingDelivery, fake_pdf


async def _submit(c: Container, text: str, *faults: str) -> JobMessage:
    key = await c.tenants.create("t")
    p = await c.tenants.authenticate(key.api_key)
    job = (await c.intake.submit(p, fake_pdf(text, *faults))).job
    assert job.blob_key is not None
    return JobMessage(job.id, job.tenant_id, job.blob_key)


async def _get(c: Container, m: JobMessage) -> Job:
    async with c.uow(m.tenant_id) as uow:
        job = await uow.jobs.get(m.tenant_id, m.job_id)
    assert job is not None
    return job


def _service(c: Container, lease_s: float) -> ProcessingService:
    return ProcessingService(
        c.uow, c.blobs, c.results, c.keyring, FakeExtractor(), c.clock, lease_seconds=lease_s, result_ttl_seconds=60
    )


async def test_heartbeats_renew_the_lease_and_the_queue_claim(container: Container) -> None:
    m = await _submit(container, "p1%PAGEp2%PAGEp3%PAGEp4", "slow")  # 4 s of work, a 3 s lease
    service = _service(container, 3.0)
    delivery = RecordingDelivery(m)
    task = asyncio.create_task(service.handle(delivery))
    leases: list[datetime] = []
    while not task.done():
        job = await _get(container, m)
        if job.lease_until is not None and job.status is JobStatus.PROCESSING:
            leases.append(job.lease_until)
        await asyncio.sleep(0.1)
    await task
    job = await _get(container, m)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1), "the lease never ran out mid-job"
    assert max(leases) - min(leases) >= timedelta(seconds=2), "the lease was pushed forward"
    assert delivery.events.count("touch") >= 2 and delivery.events[-1] == "ack"


async def test_a_failed_renewal_is_retried_and_the_job_goes_on(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = await _submit(container, "p1%PAGEp2%PAGEp3%PAGEp4", "slow")
    real = SqlJobRepository.extend_lease
    calls = {"n": 0}

    async def flaky(self: SqlJobRepository, job_id: str, attempt: int, lease_until: datetime) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database unreachable for a moment")
        return await real(self, job_id, attempt, lease_until)

    monkeypatch.setattr(SqlJobRepository, "extend_lease", flaky)
    delivery = RecordingDelivery(m)
    await _service(container, 3.0).handle(delivery)
    assert calls["n"] >= 2, "the renewal was tried again"
    assert (await _get(container, m)).status is JobStatus.COMPLETED
    assert delivery.events[-1] == "ack"


async def test_a_lost_claim_stops_the_work(container: Container) -> None:
    m = await _submit(container, "p1%PAGEp2%PAGEp3%PAGEp4%PAGEp5%PAGEp6", "slow")  # 6 s of work
    service = _service(container, 3.0)
    delivery = RecordingDelivery(m)
    started = time.monotonic()
    task = asyncio.create_task(service.handle(delivery))
    while (await _get(container, m)).status is not JobStatus.PROCESSING:
        await asyncio.sleep(0.02)
    # The worker stalls past its lease and another one takes the job over.
    now = container.clock.now()
    async with container.uow(m.tenant_id) as uow:
        await uow.jobs.extend_lease(m.job_id, 1, now - timedelta(seconds=1))
        assert await uow.jobs.claim(m.job_id, now, now + timedelta(seconds=60))
    await task
    assert time.monotonic() - started < 4.0, "stopped at the next heartbeat, not after the whole job"
    job = await _get(container, m)
    assert (job.status, job.attempts) == (JobStatus.PROCESSING, 2), "the new holder's claim is untouched"
    assert delivery.events == ["ack"]


async def test_an_expired_lease_is_taken_over_by_the_claim_but_not_the_last_attempt(container: Container) -> None:
    m = await _submit(container, "x")
    now = container.clock.now()
    past = now - timedelta(seconds=1)
    async with container.uow(m.tenant_id) as uow:
        assert await uow.jobs.claim(m.job_id, now, now + timedelta(seconds=30))
        assert await uow.jobs.claim(m.job_id, now, now + timedelta(seconds=30)) is None, "a live lease holds"
        for attempt in range(1, MAX_ATTEMPTS):
            await uow.jobs.extend_lease(m.job_id, attempt, past)
            job = await uow.jobs.claim(m.job_id, now, now + timedelta(seconds=30))
            assert job is not None and job.attempts == attempt + 1
        await uow.jobs.extend_lease(m.job_id, MAX_ATTEMPTS, past)
        assert await uow.jobs.claim(m.job_id, now, now + timedelta(seconds=30)) is None
    report = SweepReport()
    await container.sweeper.reconcile(report)
    assert report.jobs_failed == 1
    assert (await _get(container, m)).error_code == "worker_lost"


@dataclass
class MovableClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


async def test_the_reconciler_re_enqueues_a_waiting_job_at_growing_intervals(container: Container) -> None:
    m = await _submit(container, "x")
    created = (await _get(container, m)).created_at
    clock = MovableClock(created)
    stale = 60.0
    sweepers = [
        Sweeper(container.uow, container.blobs, container.results, container.queue, clock, stale_pending_seconds=stale)
        for _ in range(2)  # two worker processes
    ]

    async def requeued(at_s: float) -> list[int]:
        clock.at = created + timedelta(seconds=at_s)
        out = []
        for s in sweepers:
            report = SweepReport()
            await s.reconcile(report)
            out.append(report.jobs_requeued)
        return out

    assert await requeued(30) == [0, 0], "not stale yet"
    assert await requeued(61) == [1, 0], "one of the two processes re-enqueues it"
    assert await requeued(100) == [0, 0], "not again before its age has passed once more"
    assert await requeued(123) == [1, 0]
    assert await requeued(200) == [0, 0]
    assert await requeued(247) == [1, 0], "the interval doubles with the job's age"
    assert await requeued(493) == [0, 0]
    assert await requeued(495) == [1, 0]
    cap = REQUEUE_MAX.total_seconds()
    assert await requeued(495 + cap - 5) == [0, 0]
    assert await requeued(495 + cap + 1) == [1, 0], "never more than REQUEUE_MAX apart"
    # At the boot of an embedded server every unfinished job goes back, mark or not.
    report = SweepReport()
    await sweepers[0].reconcile(report, all_unfinished=True)
    assert report.jobs_requeued == 1
