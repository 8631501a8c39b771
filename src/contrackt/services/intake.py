"""Intake: validate, hash, encrypt, store, and record the job in one transaction."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import (
    EmptyUpload,
    IdempotencyConflict,
    InvalidRequest,
    NotAPdf,
    Overloaded,
    UnknownEngine,
)
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobMessage, JobStatus
from contrackt.domain.limits import looks_like_pdf
from contrackt.domain.tenants import Principal
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.services import audit
from contrackt.services.crypto import PURPOSE_DOCUMENT, fingerprint, seal
from contrackt.services.keyring import Keyring

MODES = ("auto", "ocr", "text")


@dataclass(frozen=True)
class Accepted:
    job: Job
    document_sha256: str
    replayed: bool = False


class IntakeService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        blobs: BlobStore,
        keyring: Keyring,
        clock: Clock,
        engines: list[str],
        max_unfinished: int,
        wake_dispatcher: asyncio.Event | None = None,
    ) -> None:
        self.uow = uow
        self.blobs = blobs
        self.keyring = keyring
        self.clock = clock
        self.engines = engines
        self.max_unfinished = max_unfinished
        self.wake_dispatcher = wake_dispatcher

    async def check_capacity(self) -> None:
        """Backpressure: refuse new work while too much is waiting."""
        async with self.uow(system=True) as uow:
            unfinished = await uow.jobs.count_unfinished()
        if unfinished >= self.max_unfinished:
            raise Overloaded(f"{unfinished} jobs are waiting; retry later", retry_after=30)

    async def submit(
        self,
        principal: Principal,
        data: bytes,
        *,
        idempotency_key: str | None = None,
        engine: str | None = None,
        mode: str = "auto",
        delete_on_read: bool | None = None,
    ) -> Accepted:
        if not data:
            raise EmptyUpload("The request body holds no document")
        if not looks_like_pdf(data[:8]):
            raise NotAPdf("The upload does not start with the PDF header (%PDF-)")
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
        if engine is not None and engine not in self.engines:
            raise UnknownEngine(f"engine must be one of {', '.join(self.engines)}")
        tenant_id = principal.tenant_id
        idem_hash = hashlib.sha256(idempotency_key.encode()).hexdigest() if idempotency_key else None
        sha = hashlib.sha256(data).hexdigest()
        if idem_hash:
            async with self.uow(tenant_id) as uow:
                existing = await uow.jobs.find_by_idempotency(tenant_id, idem_hash)
            if existing is not None:
                return Accepted(existing, sha, replayed=True)

        job_id = new_id()
        version, key = await self.keyring.current(tenant_id)
        fp = fingerprint(await self.keyring.fingerprint_key(tenant_id), data)
        blob_key = f"{tenant_id}/{job_id}.enc"
        await self.blobs.put(blob_key, seal(key, version, tenant_id, job_id, PURPOSE_DOCUMENT, data))
        now = self.clock.now()
        job = Job(
            id=job_id,
            tenant_id=tenant_id,
            status=JobStatus.PENDING,
            created_at=now,
            api_key_id=principal.api_key_id,
            fingerprint=fp,
            key_version=version,
            blob_key=blob_key,
            size_bytes=len(data),
            engine=engine,
            mode=mode,
            delete_on_read=principal.delete_on_read if delete_on_read is None else delete_on_read,
        )
        try:
            async with self.uow(tenant_id) as uow:
                await uow.jobs.add(job, idem_hash)
                await audit.record(
                    uow, self.clock, tenant_id, AuditAction.RECEIVED,
                    job_id=job_id, api_key_id=principal.api_key_id, fingerprint=fp,
                    size_bytes=len(data), key_version=version,
                )
                await uow.outbox.add(JobMessage(job_id, tenant_id, blob_key), now)
        except IdempotencyConflict:
            # A concurrent request with the same Idempotency-Key won the race.
            await self.blobs.delete(blob_key)
            if idem_hash:
                async with self.uow(tenant_id) as uow:
                    existing = await uow.jobs.find_by_idempotency(tenant_id, idem_hash)
                if existing is not None:
                    return Accepted(existing, sha, replayed=True)
            raise
        except BaseException:
            await self.blobs.delete(blob_key)
            raise
        if self.wake_dispatcher is not None:
            self.wake_dispatcher.set()
        return Accepted(job, sha)
