"""Reading jobs and results: status, result delivery (DELIVERED), purge on demand."""

from __future__ import annotations

import json
from typing import Any

from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import Gone, JobFailed, NotFinished, NotFound, Overloaded
from contrackt.domain.ids import parse_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.tenants import Principal
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.services import audit
from contrackt.services.crypto import PURPOSE_RESULT, key_version_of, open_sealed
from contrackt.services.keyring import Keyring
from contrackt.services.outcomes import destroy_result, fail_job

# Rounds of "read the job, move it conditionally" before DELETE gives up (503): each lost
# round means a worker moved the job in between, which happens once or twice at most.
STOP_ATTEMPTS = 10


def job_view(job: Job) -> dict[str, Any]:
    """The public JSON of GET /v1/jobs/{id}."""
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    return {
        "job_id": job.id,
        "status": job.status.value,
        "pages_total": job.pages_total,
        "pages_done": job.pages_done,
        "error": error,
        "created_at": job.created_at.isoformat(),
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
    }


class ResultService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        results: ResultStore,
        blobs: BlobStore,
        keyring: Keyring,
        clock: Clock,
    ) -> None:
        self.uow = uow
        self.results = results
        self.blobs = blobs
        self.keyring = keyring
        self.clock = clock

    async def job(self, principal: Principal, job_id: str) -> Job:
        """The caller's job; another tenant's job is reported exactly like a missing one."""
        canonical = parse_id(job_id)
        if canonical is None:
            raise NotFound()
        async with self.uow(principal.tenant_id) as uow:
            job = await uow.jobs.get(principal.tenant_id, canonical)
        if job is None:
            raise NotFound()
        return job

    async def result(self, principal: Principal, job_id: str) -> dict[str, Any]:
        job = await self.job(principal, job_id)
        if job.status is JobStatus.FAILED:
            raise JobFailed(f"The job failed ({job.error_code}); it has no result")
        if job.status is not JobStatus.COMPLETED:
            raise NotFinished(retry_after=1)
        now = self.clock.now()
        if job.result_expires_at is not None and job.result_expires_at <= now:
            raise Gone()
        sealed = await self.results.get(job.tenant_id, job.id)
        if sealed is None:
            raise Gone()
        key = await self.keyring.data_key(job.tenant_id, key_version_of(sealed))
        body: dict[str, Any] = json.loads(open_sealed(key, job.tenant_id, job.id, PURPOSE_RESULT, sealed))
        body.pop("engine", None)
        async with self.uow(job.tenant_id) as uow:
            await audit.record(
                uow,
                self.clock,
                job.tenant_id,
                AuditAction.DELIVERED,
                job_id=job.id,
                api_key_id=principal.api_key_id,
                fingerprint=job.fingerprint,
                result_sha256=body.get("result_sha256"),
            )
        if job.delete_on_read:
            await destroy_result(self.uow, self.results, self.clock, job)
        return body

    async def purge(self, principal: Principal, job_id: str) -> Job:
        """DELETE /v1/jobs/{id}: cancel if unfinished, destroy document and result now.

        The job moves first (cancelled if unfinished; a completed job's result marked
        destroyed), so no worker can complete it afterwards, and a worker that stores a
        result anyway deletes it itself. Then the copies are deleted, and only then does
        the PURGED row record what really existed and went (docs/adr/0009-evidence.md).
        """
        job = await self.job(principal, job_id)
        async with self.uow(job.tenant_id) as uow:
            job, had_result = await self._stop(uow, job)
        if job.blob_key:
            await self.blobs.delete(job.blob_key)
        await self.results.delete(job.tenant_id, job.id)
        async with self.uow(job.tenant_id) as uow:
            destroyed = []
            if await uow.jobs.mark_purged(job.id, self.clock.now()):
                destroyed.append("document")
            if had_result:
                destroyed.append("result")
            if destroyed:
                await audit.record(
                    uow,
                    self.clock,
                    job.tenant_id,
                    AuditAction.PURGED,
                    job_id=job.id,
                    fingerprint=job.fingerprint,
                    what="+".join(destroyed),
                )
        return await self.job(principal, job_id)

    async def _stop(self, uow: UnitOfWork, seen: Job) -> tuple[Job, bool]:
        """Make the job terminal (fail it ``cancelled`` if unfinished) and mark its result destroyed.

        Returns the job and whether it had a live result that this call marked destroyed.
        Every step is conditional: when a worker claimed, released or finished the job
        since it was read, read it again and retry (each statement of a PostgreSQL READ
        COMMITTED transaction sees the latest committed row; on SQLite nobody else writes).
        """
        for _ in range(STOP_ATTEMPTS):
            job = await uow.jobs.get(seen.tenant_id, seen.id)
            if job is None:
                raise NotFound()
            if not job.status.terminal:
                if await fail_job(uow, self.clock, job, "cancelled", "Deleted by the client"):
                    return job, False
                continue
            if job.status is JobStatus.COMPLETED:
                return job, await uow.jobs.expire_result(job.id, self.clock.now())
            return job, False
        raise Overloaded("The job is changing state; retry the deletion", retry_after=1)
