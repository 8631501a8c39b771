"""Ending things for a job, each with its audit row: failing it, destroying its result."""

from __future__ import annotations

from contrackt.domain.audit import AuditAction
from contrackt.domain.jobs import Job, JobStatus
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.services import audit


async def fail_job(uow: UnitOfWork, clock: Clock, job: Job, code: str, message: str) -> bool:
    """Fail a pending job, or the processing claim ``job.attempts``; True if this call moved it.

    The update is conditional, so of several racing callers exactly one records FAILED.
    """
    now = clock.now()
    if job.status is JobStatus.PENDING:
        moved = await uow.jobs.fail_pending(job.id, now, code, message)
    else:
        moved = await uow.jobs.finish(
            job.id, job.attempts, completed=False, now=now, error_code=code, error_message=message
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
    return moved


async def destroy_result(
    uow_factory: UnitOfWorkFactory, results: ResultStore, clock: Clock, job: Job, reason: str | None = None
) -> None:
    """Delete the job's result and record it (PURGED, what=result) exactly once."""
    await results.delete(job.tenant_id, job.id)
    async with uow_factory(job.tenant_id) as uow:
        if await uow.jobs.expire_result(job.id, clock.now()):
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
