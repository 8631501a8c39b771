"""Nothing accepted is lost: outbox, claims, leases, start-up recovery (embedded backends)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from contrackt.bootstrap import Container
from contrackt.domain.audit import AuditAction
from contrackt.domain.jobs import JobStatus
from contrackt.services.dispatch import relay_outbox
from contrackt.services.purge import SweepReport
from contrackt.worker.runtime import WorkerRuntime
from tests.fakes import FakeExtractor, fake_pdf


async def _submit(c: Container, text: str = "x") -> tuple[str, str]:
    key = await c.tenants.create("t")
    principal = await c.tenants.authenticate(key.api_key)
    accepted = await c.intake.submit(principal, fake_pdf(text))
    return key.tenant_id, accepted.job.id


async def _job(c: Container, tenant_id: str, job_id: str) -> JobStatus:
    async with c.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
    assert job is not None
    return job.status


async def test_outbox_publishes_only_committed_jobs_once(container: Container) -> None:
    _, job_id = await _submit(container)
    assert await relay_outbox(container.uow, container.queue, container.clock) == 1
    assert await relay_outbox(container.uow, container.queue, container.clock) == 0
    delivery = await container.queue.receive("c", 1)
    assert delivery is not None and delivery.message.job_id == job_id


async def test_duplicate_delivery_completes_once(container: Container) -> None:
    tenant_id, job_id = await _submit(container)
    await relay_outbox(container.uow, container.queue, container.clock)
    processing = container.attach_extractor(FakeExtractor())
    first = await container.queue.receive("c", 1)
    assert first is not None
    # the same message delivered twice (at-least-once)
    await container.queue.publish(first.message)
    second = await container.queue.receive("c", 1)
    assert second is not None
    await processing.handle(first)
    await processing.handle(second)
    async with container.uow(tenant_id) as uow:
        actions = [r.event.action for r in await uow.audit.chain(tenant_id) if r.event.job_id == job_id]
    assert actions.count(AuditAction.COMPLETED) == 1
    assert actions == [AuditAction.RECEIVED, AuditAction.PROCESSING, AuditAction.COMPLETED, AuditAction.PURGED]


async def test_startup_recovery_requeues_orphans(container: Container) -> None:
    """A job claimed by a process that died, and one whose queue message died with it."""
    t1, claimed = await _submit(container, "a")
    t2, queued = await _submit(container, "b")
    now = container.clock.now()
    async with container.uow(t1) as uow:
        assert await uow.jobs.claim(claimed, now, now + timedelta(hours=1))
    # the outbox rows were published into a queue that no longer exists
    await relay_outbox(container.uow, container.queue, container.clock)
    container.queue = type(container.queue)()  # type: ignore[call-arg]
    container.sweeper.queue = container.queue
    runtime = WorkerRuntime(container, FakeExtractor())
    await runtime.start(relay=True)
    try:
        for _ in range(200):
            if {await _job(container, t1, claimed), await _job(container, t2, queued)} == {JobStatus.COMPLETED}:
                break
            await asyncio.sleep(0.05)
    finally:
        await runtime.stop(2)
    assert await _job(container, t1, claimed) is JobStatus.COMPLETED
    assert await _job(container, t2, queued) is JobStatus.COMPLETED


async def test_expired_lease_is_reclaimed_and_third_loss_fails(container: Container) -> None:
    tenant_id, job_id = await _submit(container)
    for attempt in range(1, 4):
        now = container.clock.now()
        async with container.uow(tenant_id) as uow:
            job = await uow.jobs.claim(job_id, now - timedelta(hours=2), now - timedelta(hours=1))
        assert job is not None and job.attempts == attempt
        report = SweepReport()
        await container.sweeper.reconcile(report)
        if attempt < 3:
            assert report.jobs_requeued == 1
            assert await _job(container, tenant_id, job_id) is JobStatus.PENDING
    assert report.jobs_failed == 1
    async with container.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error_code == "worker_lost"


async def test_orphan_blobs_of_finished_jobs_are_swept(container: Container) -> None:
    tenant_id, job_id = await _submit(container)
    blob_key = f"{tenant_id}/{job_id}.enc"
    assert await container.blobs.exists(blob_key)
    async with container.uow(tenant_id) as uow:
        await uow.jobs.fail_pending(job_id, container.clock.now(), "cancelled", "test")
    report = await container.sweeper.sweep()
    assert report.orphan_blobs_deleted == 1
    assert not await container.blobs.exists(blob_key)
