"""Ending things for a job, each with its audit row: failing it, destroying its document or result.

Destruction follows one order everywhere (docs/adr/0009-evidence.md): first the database
says the thing is gone (a conditional update, so of several racing callers exactly one
records it), then the stored copy is deleted, then the audit row records what went. A
worker that stores a result after the database said "gone" sees it and deletes its own
copy, so no interleaving leaves a result behind a receipt that lists it destroyed.
"""

from __future__ import annotations

from datetime import datetime

from contrackt.domain.audit import AuditAction
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.webhooks import JOB_FAILED
from contrackt.metrics import JOB_FAILURES, JOBS_FINISHED
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.services import audit, usage
from contrackt.services.webhooks import emit_job_event


async def fail_job(
    uow: UnitOfWork, clock: Clock, job: Job, code: str, message: str, *, hold_until: datetime | None = None
) -> bool:
    """Fail a pending job, or the processing claim ``job.attempts``; True if this call moved it.

    The update is conditional, so of several racing callers exactly one records FAILED and
    queues the ``job.failed`` webhook events (in this same transaction).
    ``hold_until`` (a processing claim's retryable failure): its sealed document is kept until
    then for a replay, recorded as HELD next to FAILED (docs/adr/0013-operations.md).
    """
    now = clock.now()
    if job.status is JobStatus.PENDING:
        moved = await uow.jobs.fail_pending(job.id, now, code, message)
        hold_until = None
    else:
        moved = await uow.jobs.finish(
            job.id,
            job.attempts,
            completed=False,
            now=now,
            error_code=code,
            error_message=message,
            document_hold_until=hold_until,
        )
    if moved:
        await audit.record(
            uow,
            clock,
            job.tenant_id,
            AuditAction.FAILED,
            job_id=job.id,
            fingerprint=job.fingerprint,
            outcome=code,
            attempt=job.attempts or None,
        )
        await emit_job_event(uow, clock, job, JOB_FAILED, {"code": code, "message": message})
        if hold_until is not None:
            await audit.record(
                uow,
                clock,
                job.tenant_id,
                AuditAction.HELD,
                job_id=job.id,
                fingerprint=job.fingerprint,
                what="document",
                until=hold_until.isoformat(timespec="seconds"),
            )
        # Counted once the row moved (inside the caller's transaction: a commit that then fails
        # would over-count by one; the database, not this counter, is the record).
        JOBS_FINISHED.inc("cancelled" if code == "cancelled" else "failed", tenant=job.tenant_id)
        if code != "cancelled":
            JOB_FAILURES.labels(code).inc()
        await usage.count_failed(uow, job.tenant_id, now, code)
    return moved


def result_lives(job: Job | None) -> bool:
    """Whether the job has a result that nobody has destroyed (or marked destroyed) yet."""
    return job is not None and job.status is JobStatus.COMPLETED and job.result_purged_at is None


async def destroy_result(
    uow_factory: UnitOfWorkFactory, results: ResultStore, clock: Clock, job: Job, reason: str | None = None
) -> bool:
    """Mark the job's result destroyed, delete it, and record it (PURGED, what=result) exactly once.

    Marking comes first: a worker whose late write lands after the deletion reads the mark
    and deletes its copy (ProcessingService._complete). True if this call recorded it.
    """
    async with uow_factory(job.tenant_id) as uow:
        first = await uow.jobs.expire_result(job.id, clock.now())
    await results.delete(job.tenant_id, job.id)
    if first:
        async with uow_factory(job.tenant_id) as uow:
            await audit.record(
                uow,
                clock,
                job.tenant_id,
                AuditAction.PURGED,
                job_id=job.id,
                fingerprint=job.fingerprint,
                what="result",
                reason=reason,
            )
    return first


async def destroy_document(
    uow_factory: UnitOfWorkFactory, blobs: BlobStore, clock: Clock, job: Job, reason: str | None = None
) -> bool:
    """Delete the encrypted upload, then record it once (PURGED, what=document); True if this call did.

    ``purged_at`` is set only after the delete returned, and only by the first caller: a
    worker and a concurrent DELETE both delete, one of them records.
    """
    if job.blob_key:
        await blobs.delete(job.blob_key)
    async with uow_factory(job.tenant_id) as uow:
        if not await uow.jobs.mark_purged(job.id, clock.now()):
            return False
        await audit.record(
            uow,
            clock,
            job.tenant_id,
            AuditAction.PURGED,
            job_id=job.id,
            fingerprint=job.fingerprint,
            what="document",
            reason=reason,
        )
    return True
