"""Reading jobs and results: status, streamed result delivery (DELIVERED), purge on demand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import (
    ContracktError,
    DecryptionFailed,
    FormatUnavailable,
    Gone,
    JobFailed,
    NotFinished,
    NotFound,
    Overloaded,
)
from contrackt.domain.ids import parse_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.tenants import Principal
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.services import audit
from contrackt.services.crypto import (
    PURPOSE_RESULT,
    STREAM_HEADER_SIZE,
    TAG_SIZE,
    StreamOpener,
    key_version_of,
    open_sealed,
    stream_key_version,
)
from contrackt.services.keyring import Keyring
from contrackt.services.outcomes import destroy_result, fail_job
from contrackt.services.result_object import MAX_HEADER_SIZE, Part, ResultHeader, is_legacy, part_opener

log = structlog.get_logger("contrackt.results")

READ_BYTES = 1024 * 1024  # the most ciphertext one store read brings into the process while streaming
MEDIA_TYPES: dict[Part, str] = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "pdf": "application/pdf",
}


@dataclass(frozen=True)
class ResultBody:
    """A result ready to stream: its media type, its exact length, and its bytes in pieces."""

    media_type: str
    length: int
    chunks: AsyncIterator[bytes]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


_UNAVAILABLE: dict[Part, str] = {
    "json": "This result has no JSON form",
    "text": "This result has no text form",
    "markdown": "This result was stored before markdown results existed; submit the document again",
    "pdf": "No searchable PDF was kept for this job (it would have been over its size cap, took too long, "
    "or searchable PDFs are switched off here); the text result is complete",
}

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

    async def open_result(self, principal: Principal, job_id: str, part: Part = "json") -> ResultBody:
        """The result, to be streamed: 404/409/410 and a bad first segment are raised here, before
        any byte is sent; DELIVERED is recorded here too. A later integrity failure, or the result
        vanishing meanwhile, raises from ``chunks`` (the caller must break the transfer). With
        delete_on_read the result is destroyed once the last byte has been handed over."""
        job = await self.job(principal, job_id)
        if job.status is JobStatus.FAILED:
            raise JobFailed(f"The job failed ({job.error_code}); it has no result")
        if job.status is not JobStatus.COMPLETED:
            raise NotFinished(retry_after=1)
        if job.result_expires_at is not None and job.result_expires_at <= self.clock.now():
            raise Gone()
        head = await self.results.read(job.tenant_id, job.id, 0, MAX_HEADER_SIZE)
        if head is None:
            raise Gone()
        if is_legacy(head):
            return await self._legacy(principal, job, part)
        header = ResultHeader.parse(head)
        if not header.has(part):
            raise FormatUnavailable(_UNAVAILABLE[part])
        offset, _ = header.span(part)
        stream_head = await self.results.read(job.tenant_id, job.id, offset, STREAM_HEADER_SIZE)
        if stream_head is None:
            raise Gone()
        key = await self.keyring.data_key(job.tenant_id, stream_key_version(stream_head))
        opener = part_opener(key, job.tenant_id, job.id, header, part, stream_head)
        segments = self._segments(job, offset, opener)
        first = await anext(segments)  # authenticates the header (and so the digest) too
        await self._delivered(principal, job, header.result_sha256)
        return ResultBody(MEDIA_TYPES[part], opener.plaintext_length, self._deliver(job, first, segments))

    async def result(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """The whole result JSON, parsed: for in-process callers and tests. The API streams."""
        body = await self.open_result(principal, job_id, "json")
        parsed: dict[str, Any] = json.loads(b"".join([chunk async for chunk in body.chunks]))
        return parsed

    async def _segments(self, job: Job, offset: int, opener: StreamOpener) -> AsyncIterator[bytes]:
        """Plaintext segment by segment, reading at most READ_BYTES of ciphertext at a time."""
        per_read = max(1, READ_BYTES // (opener.segment_size + TAG_SIZE))
        index = 0
        while index < opener.segment_count:
            last = min(opener.segment_count, index + per_read) - 1
            start, _ = opener.segment_span(index)
            last_start, last_length = opener.segment_span(last)
            want = last_start + last_length - start
            data = await self.results.read(job.tenant_id, job.id, offset + start, want)
            if data is None:
                raise Gone()
            if len(data) != want:
                raise DecryptionFailed("ciphertext does not belong here or was altered")
            view = memoryview(data)
            for i in range(index, last + 1):
                seg_start, seg_length = opener.segment_span(i)
                yield opener.open(i, view[seg_start - start : seg_start - start + seg_length])
            index = last + 1

    async def _deliver(self, job: Job, first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            yield first
            async for plaintext in rest:
                yield plaintext
        except ContracktError as exc:
            # Nothing after this is sent: the client sees a broken transfer, never a short body.
            log.error("result.stream.aborted", reason=exc.code)
            raise
        if job.delete_on_read:
            await destroy_result(self.uow, self.results, self.clock, job)

    async def _legacy(self, principal: Principal, job: Job, part: Part) -> ResultBody:
        """A result stored in one piece before results were streamed (still within its TTL)."""
        if part not in ("json", "text"):
            raise FormatUnavailable(_UNAVAILABLE[part])
        sealed = await self.results.get(job.tenant_id, job.id)
        if sealed is None:
            raise Gone()
        key = await self.keyring.data_key(job.tenant_id, key_version_of(sealed))
        body: dict[str, Any] = json.loads(open_sealed(key, job.tenant_id, job.id, PURPOSE_RESULT, sealed))
        body.pop("engine", None)
        if part == "text":
            data = str(body["text"]).encode()
        else:
            data = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        await self._delivered(principal, job, body.get("result_sha256"))
        if job.delete_on_read:
            await destroy_result(self.uow, self.results, self.clock, job)
        return ResultBody(MEDIA_TYPES[part], len(data), _once(data))

    async def _delivered(self, principal: Principal, job: Job, result_sha256: str | None) -> None:
        async with self.uow(job.tenant_id) as uow:
            await audit.record(
                uow,
                self.clock,
                job.tenant_id,
                AuditAction.DELIVERED,
                job_id=job.id,
                api_key_id=principal.api_key_id,
                fingerprint=job.fingerprint,
                result_sha256=result_sha256,
            )

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
            if job.document_hold_until is not None and not await uow.jobs.end_hold(job.id):
                continue  # a replay moved it meanwhile: cancel it instead
            return job, False
        raise Overloaded("The job is changing state; retry the deletion", retry_after=1)
