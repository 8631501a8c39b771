"""Intake: validate, hash, encrypt, store, and record the job in one transaction."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import (
    BacklogFull,
    EmptyUpload,
    IdempotencyConflict,
    InvalidRequest,
    NotAPdf,
    Overloaded,
    UnknownEngine,
)
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobMessage, JobStatus
from contrackt.domain.limits import SNIFF_BYTES, sniff_media_type
from contrackt.domain.pages import format_pages, parse_pages
from contrackt.domain.tenants import Principal
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.services import audit
from contrackt.services.crypto import PURPOSE_DIGEST, PURPOSE_DOCUMENT, fingerprint, seal
from contrackt.services.keyring import Keyring, document_sha256

MODES = ("auto", "ocr", "text")

# Backpressure: Retry-After = unfinished jobs / measured throughput, clipped.
THROUGHPUT_WINDOW = timedelta(minutes=5)
THROUGHPUT_CACHE = timedelta(seconds=5)
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 300
# What a refused client is told, rounded up to one of these: the exact figure would be a
# fine-grained reading of the service's load (backlog / throughput) for any tenant to take.
RETRY_AFTER_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 180, RETRY_AFTER_MAX_S)


def validate_upload(data: bytes) -> str:
    """The checks every upload passes before anything is stored (pure, cheap); returns the
    document's media type, told by its first bytes (PDF, JPEG, PNG or TIFF).

    Raises ``EmptyUpload`` or ``NotAPdf`` (415 ``not_a_pdf``, the code it always had); the
    document itself is parsed and decoded only later, in a sandboxed child process.
    """
    if not data:
        raise EmptyUpload("The request body holds no document")
    media_type = sniff_media_type(data[:SNIFF_BYTES])
    if media_type is None:
        raise NotAPdf(
            "The upload is not a PDF, JPEG, PNG or TIFF document (it must start with %PDF- or the "
            "image format's signature)"
        )
    return media_type


def retry_after_seconds(unfinished: int, per_second: float) -> int:
    """How long a refused client should wait: the time to drain the backlog at the measured rate."""
    if per_second <= 0 or not math.isfinite(per_second):
        return RETRY_AFTER_MAX_S
    wait = math.ceil(unfinished / per_second)
    return max(RETRY_AFTER_MIN_S, min(RETRY_AFTER_MAX_S, wait))


def coarse_retry_after(seconds: int) -> int:
    """``seconds`` rounded up to the next of RETRY_AFTER_STEPS."""
    return next((step for step in RETRY_AFTER_STEPS if step >= seconds), RETRY_AFTER_MAX_S)


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
        *,
        tenant_max_backlog: int | None = None,
        max_pages: int = 500,
    ) -> None:
        self.uow = uow
        self.blobs = blobs
        self.keyring = keyring
        self.clock = clock
        self.engines = engines
        self.max_unfinished = max_unfinished
        self.tenant_max_backlog = tenant_max_backlog
        self.max_pages = max_pages
        self.wake_dispatcher = wake_dispatcher
        self._rate: tuple[datetime, float] | None = None  # (measured at, jobs finished per second)

    async def check_capacity(self, principal: Principal | None = None) -> None:
        """Backpressure: refuse new work while too much is waiting.

        First the caller's own backlog (``backlog_full``, 429): a tenant with its
        limit of unfinished jobs (``max_backlog``, else the deployment's default)
        is refused, and no other tenant notices. Then the whole service's
        (``overloaded``, 503).

        Each refusal says when to come back: the backlog divided by the measured
        throughput (jobs that reached a terminal state in the last few minutes,
        from the jobs table, so every API process agrees), clipped to [1, 300] s and
        rounded up to a coarse step; for ``backlog_full`` both are the tenant's own.
        No message states a count: a tenant learns nothing about other tenants' load,
        and no more than a coarse wait about the service's.
        """
        if principal is not None:
            await self._check_tenant(principal)
        async with self.uow(system=True) as uow:
            unfinished = await uow.jobs.count_unfinished()
        if unfinished < self.max_unfinished:
            return
        per_second = await self.throughput()
        raise Overloaded(
            "The service has too much work waiting; retry later",
            retry_after=coarse_retry_after(retry_after_seconds(unfinished, per_second)),
        )

    async def _check_tenant(self, principal: Principal) -> None:
        limit = principal.max_backlog if principal.max_backlog is not None else self.tenant_max_backlog
        if limit is None:
            return
        tenant_id = principal.tenant_id
        async with self.uow(tenant_id) as uow:
            unfinished = await uow.jobs.count_unfinished(tenant_id)
            if unfinished < limit:
                return
            finished = await uow.jobs.count_finished_since(self.clock.now() - THROUGHPUT_WINDOW, tenant_id)
        # One of the tenant's own jobs has to finish before another is accepted.
        per_second = finished / THROUGHPUT_WINDOW.total_seconds()
        raise BacklogFull(
            "This tenant has reached its limit of unfinished jobs; retry when some have finished",
            retry_after=coarse_retry_after(retry_after_seconds(unfinished - limit + 1, per_second)),
        )

    async def throughput(self) -> float:
        """Jobs finished per second over the last THROUGHPUT_WINDOW (cached briefly)."""
        now = self.clock.now()
        if self._rate is not None and now - self._rate[0] < THROUGHPUT_CACHE:
            return self._rate[1]
        async with self.uow(system=True) as uow:
            finished = await uow.jobs.count_finished_since(now - THROUGHPUT_WINDOW)
        per_second = finished / THROUGHPUT_WINDOW.total_seconds()
        self._rate = (now, per_second)
        return per_second

    async def submit(
        self,
        principal: Principal,
        data: bytes,
        *,
        idempotency_key: str | None = None,
        engine: str | None = None,
        mode: str = "auto",
        delete_on_read: bool | None = None,
        pages: str | None = None,
    ) -> Accepted:
        media_type = validate_upload(data)
        selection = format_pages(parse_pages(pages, self.max_pages)) if pages is not None else None
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
        if engine is not None and engine not in self.engines:
            raise UnknownEngine(f"engine must be one of {', '.join(self.engines)}")
        tenant_id = principal.tenant_id
        idem_hash = hashlib.sha256(idempotency_key.encode()).hexdigest() if idempotency_key else None
        sha = hashlib.sha256(data).hexdigest()
        fp = fingerprint(await self.keyring.fingerprint_key(tenant_id), data)
        if idem_hash:
            async with self.uow(tenant_id) as uow:
                existing = await uow.jobs.find_by_idempotency(tenant_id, idem_hash)
            if existing is not None:
                return await self._replay(existing, fp, sha)

        job_id = new_id()
        version, key = await self.keyring.current(tenant_id)
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
            document_digest=seal(key, version, tenant_id, job_id, PURPOSE_DIGEST, bytes.fromhex(sha)),
            key_version=version,
            blob_key=blob_key,
            size_bytes=len(data),
            engine=engine,
            mode=mode,
            # A request may ask for delete-on-read; it cannot switch off the tenant's policy.
            delete_on_read=principal.delete_on_read or bool(delete_on_read),
            media_type=media_type,
            pages=selection,
        )
        try:
            async with self.uow(tenant_id) as uow:
                await uow.jobs.add(job, idem_hash)
                await audit.record(
                    uow,
                    self.clock,
                    tenant_id,
                    AuditAction.RECEIVED,
                    job_id=job_id,
                    api_key_id=principal.api_key_id,
                    fingerprint=fp,
                    size_bytes=len(data),
                    key_version=version,
                    media_type=media_type,
                )
                await uow.outbox.add(JobMessage(job_id, tenant_id, blob_key), now)
        except IdempotencyConflict:
            # A concurrent request with the same Idempotency-Key won the race.
            await self.blobs.delete(blob_key)
            if idem_hash:
                async with self.uow(tenant_id) as uow:
                    existing = await uow.jobs.find_by_idempotency(tenant_id, idem_hash)
                if existing is not None:
                    return await self._replay(existing, fp, sha)
            raise
        except BaseException:
            await self.blobs.delete(blob_key)
            raise
        if self.wake_dispatcher is not None:
            self.wake_dispatcher.set()
        return Accepted(job, sha)

    async def _replay(self, existing: Job, fp: str, sha: str) -> Accepted:
        """The same Idempotency-Key again: the original job if this is the same document, else 409.

        Documents are compared by their keyed fingerprints (the plain hash is never stored);
        the answer carries the ORIGINAL document's SHA-256, unsealed from the job.
        """
        if existing.fingerprint is None or not hmac.compare_digest(existing.fingerprint, fp):
            raise IdempotencyConflict("This Idempotency-Key was already used with another document")
        original = await document_sha256(self.keyring, existing)
        # Same fingerprint, same document: a job from before sealed digests has the same hash as this one.
        return Accepted(existing, original or sha, replayed=True)
