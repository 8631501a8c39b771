"""Retention sweeper and reconciler: expired results, orphan blobs, stuck jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog

from contrackt.domain.ids import parse_id
from contrackt.domain.jobs import JobMessage, JobStatus
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.queue import JobQueue
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.services.outcomes import destroy_document, destroy_result, fail_job

log = structlog.get_logger("contrackt.sweeper")

# The longest a pending job waits between two re-enqueues by the reconciler.
REQUEUE_MAX = timedelta(minutes=5)


@dataclass
class SweepReport:
    results_expired: int = 0
    orphan_blobs_deleted: int = 0
    jobs_requeued: int = 0
    jobs_failed: int = 0
    held_documents_destroyed: int = 0


class Sweeper:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        blobs: BlobStore,
        results: ResultStore,
        queue: JobQueue,
        clock: Clock,
        *,
        stale_pending_seconds: float,
        orphan_grace_seconds: float = 300.0,
    ) -> None:
        self.uow = uow
        self.blobs = blobs
        self.results = results
        self.queue = queue
        self.clock = clock
        self.stale_pending = timedelta(seconds=stale_pending_seconds)
        self.orphan_grace = timedelta(seconds=orphan_grace_seconds)

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        report.results_expired = await self.expire_results()
        report.held_documents_destroyed = await self.end_expired_holds()
        await self.reconcile(report)
        await self.delete_orphans(report)
        if report.jobs_requeued or report.jobs_failed or report.orphan_blobs_deleted or report.held_documents_destroyed:
            log.info("sweep.done", **report.__dict__)
        return report

    async def expire_results(self) -> int:
        """Delete expired results and record each expiry (PURGED, what=result) in the audit trail."""
        now = self.clock.now()
        async with self.uow(system=True) as uow:
            expired = await uow.jobs.find_expired_results(now)
        for job in expired:
            await destroy_result(self.uow, self.results, self.clock, job, reason="expired")
        # Backends without their own expiry (the SQL table) also drop anything left over.
        await self.results.purge_expired(now)
        return len(expired)

    async def end_expired_holds(self) -> int:
        """Destroy the documents of failed jobs whose replay window ended (PURGED, reason=hold_expired).

        The hold ends first, conditionally: a replay that moved the job meanwhile wins, and a
        replay after this point finds no hold and leaves the job alone.
        """
        now = self.clock.now()
        async with self.uow(system=True) as uow:
            held = await uow.jobs.find_held(before=now)
        destroyed = 0
        for job in held:
            async with self.uow(job.tenant_id) as uow:
                ended = await uow.jobs.end_hold(job.id, before=now)
            if ended and await destroy_document(self.uow, self.blobs, self.clock, job, reason="hold_expired"):
                destroyed += 1
        return destroyed

    async def reconcile(self, report: SweepReport, *, all_unfinished: bool = False) -> None:
        """Re-enqueue jobs stuck in pending, or in processing after their lease ended.

        A pending job may simply be waiting its turn (behind its own tenant's backlog, or
        at its in-flight cap) with its message still in the queue. So a re-enqueued job
        is not re-enqueued again before an interval that grows with its age (its age,
        between ``stale_pending`` and REQUEUE_MAX): one database-side mark that every
        sweeping process honours, so a long backlog does not fill the queue with copies.

        ``all_unfinished``: at boot of an embedded (in-process queue) server every
        unfinished job is orphaned, whatever its age, lease or mark.
        """
        now = self.clock.now()
        far = now + timedelta(days=3650)
        async with self.uow(system=True) as uow:
            stale = await uow.jobs.find_stale(
                far if all_unfinished else now - self.stale_pending, far if all_unfinished else now
            )
        for job in stale:
            hold = now + min(max(self.stale_pending, now - job.created_at), REQUEUE_MAX)
            async with self.uow(job.tenant_id) as uow:
                if job.status is JobStatus.PROCESSING:
                    if job.attempts >= job.attempt_limit:
                        message = "The worker stopped during every attempt"
                        if await fail_job(uow, self.clock, job, "worker_lost", message):
                            report.jobs_failed += 1
                        continue
                    if not await uow.jobs.release(job.id, job.attempts, requeue_after=hold):
                        continue
                elif not await uow.jobs.hold_requeue(job.id, far if all_unfinished else now, hold):
                    continue  # another sweeper re-enqueued it meanwhile
            if job.blob_key is None:
                continue
            await self.queue.publish(JobMessage(job.id, job.tenant_id, job.blob_key, job.attempts))
            report.jobs_requeued += 1

    async def delete_orphans(self, report: SweepReport) -> None:
        """Blobs whose job is finished or unknown (a crash between steps) are deleted."""
        now = self.clock.now()
        for info in await self.blobs.list(""):
            key = info.key
            parts = key.removesuffix(".enc").split("/")
            if len(parts) != 2:
                continue
            tenant_id, job_id = parse_id(parts[0]), parse_id(parts[1])
            if tenant_id is None or job_id is None:
                continue
            async with self.uow(tenant_id) as uow:
                job = await uow.jobs.get(tenant_id, job_id)
            if job is None:
                # Intake stores the blob just before the job row; leave young ones alone.
                if info.modified < now - self.orphan_grace:
                    await self.blobs.delete(key)
                    report.orphan_blobs_deleted += 1
            elif job.status.terminal and (job.document_hold_until is None or job.document_hold_until <= now):
                # The worker died between finishing and destroying: destroy it now, with its
                # PURGED row (so the job's deletion receipt becomes available).
                await destroy_document(self.uow, self.blobs, self.clock, job, reason="sweeper")
                if job.blob_key != key:
                    await self.blobs.delete(key)
                report.orphan_blobs_deleted += 1
