"""Processing: claim a job, decrypt, extract, store the result (JSON, text, markdown, searchable PDF),
destroy the document."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import datetime, timedelta
from typing import Any

import structlog

from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import PERMANENT_JOB_ERRORS, ContracktError
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.pages import expand_pages
from contrackt.domain.results import ExtractionResult
from contrackt.domain.webhooks import JOB_COMPLETED
from contrackt.metrics import JOB_RETRIES, JOB_SECONDS, JOB_WAIT_SECONDS, JOBS_DEAD_LETTERED, JOBS_FINISHED, PAGES
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.extractor import ExtractOptions, Extractor
from contrackt.ports.queue import Delivery
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.services import audit, usage
from contrackt.services.crypto import PURPOSE_DOCUMENT, key_version_of, open_sealed
from contrackt.services.keyring import Keyring
from contrackt.services.markdown import render_markdown
from contrackt.services.outcomes import destroy_document, fail_job, result_lives
from contrackt.services.result_object import seal_result
from contrackt.services.webhooks import emit_job_event

log = structlog.get_logger("contrackt.processing")


def backoff_seconds(attempt: int) -> float:
    return float(min(30, 2**attempt))


def result_payload(job_id: str, result: ExtractionResult) -> tuple[bytes, str]:
    """The result JSON as stored and served (DESIGN.md §5), and its ``result_sha256``.

    ``result_sha256`` is the SHA-256 of the UTF-8 bytes of
    ``json.dumps(body, sort_keys=True, ensure_ascii=False)`` (separators ``", "`` and ``": "``),
    where ``body`` is the served JSON object without the ``result_sha256`` key: ``job_id``,
    ``text``, ``pages``, ``confidence_avg``, ``active_content``. A client can recompute it from
    what it received. The engine is not in the result (it is in the COMPLETED audit row).
    The stored bytes are compact (``","`` and ``":"``), as the API has always answered.
    """
    body: dict[str, Any] = {"job_id": job_id, **result.to_dict()}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    body["result_sha256"] = digest
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(), digest


class ProcessingService:
    # A tenant at its in-flight cap: its message comes back after this long (its lane is
    # held meanwhile, other tenants are served). Short: a job of its own may end any moment.
    inflight_retry_s = 1.0

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        blobs: BlobStore,
        results: ResultStore,
        keyring: Keyring,
        extractor: Extractor,
        clock: Clock,
        *,
        lease_seconds: float,
        result_ttl_seconds: int,
        max_inflight: int | None = None,
        replay_window_seconds: float = 0.0,
        searchable_pdf: bool = True,
    ) -> None:
        self.uow = uow
        self.blobs = blobs
        self.results = results
        self.keyring = keyring
        self.extractor = extractor
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.result_ttl = timedelta(seconds=result_ttl_seconds)
        self.max_inflight = max_inflight
        # A retryable failure keeps its sealed document this long for `contrackt dlq replay`.
        self.replay_window = timedelta(seconds=max(0.0, replay_window_seconds))
        self.searchable_pdf = searchable_pdf

    async def handle(self, delivery: Delivery) -> None:
        msg = delivery.message
        structlog.contextvars.bind_contextvars(job_id=msg.job_id, tenant_id=msg.tenant_id)
        try:
            await self._handle(delivery)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "tenant_id")

    async def _handle(self, delivery: Delivery) -> None:
        msg = delivery.message
        now = self.clock.now()
        current: Job | None = None
        async with self.uow(msg.tenant_id) as uow:
            job = await uow.jobs.claim(msg.job_id, now, now + self.lease, max_inflight=self.max_inflight)
            if job is not None:
                await audit.record(
                    uow,
                    self.clock,
                    job.tenant_id,
                    AuditAction.PROCESSING,
                    job_id=job.id,
                    fingerprint=job.fingerprint,
                    attempt=job.attempts,
                )
            else:
                current = await uow.jobs.get(msg.tenant_id, msg.job_id)
        if job is None:
            await self._not_claimed(delivery, current, now)
            return
        log.info("job.processing", attempt=job.attempts)
        JOB_WAIT_SECONDS.observe(max(0.0, (now - job.created_at).total_seconds()))
        started = time.monotonic()
        heartbeat = asyncio.create_task(self._heartbeat(job, delivery))
        work = asyncio.create_task(self._extract(job))
        try:
            await asyncio.wait({work, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Graceful shutdown ran out of time: hand the job back now instead of
            # leaving it `processing` until its lease expires.
            heartbeat.cancel()
            work.cancel()
            await asyncio.shield(self._release_on_shutdown(delivery, job, work))
            raise
        finally:
            heartbeat.cancel()
        if not work.done():
            # The claim is gone (the lease ran out while renewals failed, and the job was
            # taken over or handed back): whatever this attempt produced would be refused.
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            log.warning("job.abandoned", reason="lease_lost", attempt=job.attempts)
            await delivery.ack()
            return
        try:
            result = work.result()
        except ContracktError as exc:
            await self._on_failure(delivery, job, exc.code, exc.message, permanent=exc.code in PERMANENT_JOB_ERRORS)
            return
        except Exception:  # an adapter failed (storage, database): retry
            log.exception("job.error")
            await self._on_failure(delivery, job, "internal_error", "Processing failed", permanent=False)
            return
        try:
            await self._complete(delivery, job, result, time.monotonic() - started)
        except Exception:  # storing the result failed: retry (finishing is conditional, so idempotent)
            log.exception("job.complete.error")
            await self._on_failure(delivery, job, "internal_error", "Storing the result failed", permanent=False)

    async def _not_claimed(self, delivery: Delivery, current: Job | None, now: datetime) -> None:
        """The claim was refused: drop the message, or bring it back later (not as a failure)."""
        if current is None or current.status.terminal:
            # Finished, or unknown: nothing to do.
            log.info("job.claim.skipped")
            await delivery.ack()
        elif current.status is JobStatus.PENDING:
            # The tenant has its cap of jobs in flight.
            log.info("job.deferred", reason="inflight_cap")
            await delivery.defer(self.inflight_retry_s, hold_tenant=True)
        else:
            # Another worker holds it under a live lease: a duplicate, or that worker died
            # and its lease has not run out yet. Look again once it has (the claim then
            # takes the job over); if the job finished by then, the message is dropped.
            left = (current.lease_until - now).total_seconds() if current.lease_until else 0.0
            delay = min(max(2.0, left + 1.0), self.lease.total_seconds() + 1.0)
            log.info("job.deferred", reason="held_elsewhere", delay_s=round(delay, 1))
            await delivery.defer(delay)

    async def _release_on_shutdown(self, delivery: Delivery, job: Job, work: asyncio.Task[ExtractionResult]) -> None:
        try:
            async with asyncio.timeout(5.0):
                await asyncio.gather(work, return_exceptions=True)  # the extractor cleans up first
                async with self.uow(job.tenant_id) as uow:
                    await uow.jobs.release(job.id, job.attempts)
                await delivery.retry(0.0)
            log.warning("job.released", attempt=job.attempts, reason="shutdown")
        except Exception:  # the lease and the reconciler still recover it
            log.exception("job.release.error")

    async def _heartbeat(self, job: Job, delivery: Delivery) -> None:
        """Renew the claim every third of the lease: the database lease, then the queue's.

        Returns only when the claim is lost (the lease was not renewed in time and the
        job was taken over or handed back). A failed renewal is retried sooner; the
        job goes on meanwhile, since it still has the rest of its lease.
        """
        interval = max(1.0, self.lease.total_seconds() / 3)
        pause = interval
        while True:
            await asyncio.sleep(pause)
            now = self.clock.now()
            try:
                async with self.uow(job.tenant_id) as uow:
                    kept = await uow.jobs.extend_lease(job.id, job.attempts, now + self.lease)
            except Exception as exc:
                log.warning("job.heartbeat.failed", error=type(exc).__name__)
                pause = max(1.0, interval / 3)
                continue
            if not kept:
                return
            pause = interval
            try:
                await delivery.touch()
            except Exception as exc:  # the database lease is what counts; the queue may redeliver
                log.warning("job.touch.failed", error=type(exc).__name__)

    async def _extract(self, job: Job) -> ExtractionResult:
        assert job.blob_key is not None
        sealed = await self.blobs.get(job.blob_key)
        key = await self.keyring.data_key(job.tenant_id, key_version_of(sealed))
        pdf = open_sealed(key, job.tenant_id, job.id, PURPOSE_DOCUMENT, sealed)

        async def progress(done: int, total: int) -> None:
            async with self.uow(job.tenant_id) as uow:
                await uow.jobs.set_progress(job.id, done, total)

        options = ExtractOptions(
            engine=job.engine,
            mode=job.mode,
            tenant_id=job.tenant_id,
            media_type=job.media_type,
            pages=expand_pages(job.pages) if job.pages else None,
            searchable_pdf=self.searchable_pdf,
        )
        return await self.extractor.extract(pdf, options, progress)

    async def _complete(self, delivery: Delivery, job: Job, result: ExtractionResult, seconds: float) -> None:
        payload, digest = result_payload(job.id, result)
        # pure code over every line of the document: off the event loop (heartbeats keep running)
        markdown = (await asyncio.to_thread(render_markdown, result)).encode()
        version, key = await self.keyring.current(job.tenant_id)
        sealed = seal_result(
            key,
            version,
            job.tenant_id,
            job.id,
            payload,
            result.text.encode(),
            digest,
            markdown=markdown,
            pdf=result.searchable_pdf,
        )
        parts = "json+text+markdown" + ("+pdf" if result.searchable_pdf is not None else "")
        del payload, markdown
        now = self.clock.now()
        expires = now + self.result_ttl
        async with self.uow(job.tenant_id) as uow:
            # Cheap check first: a job cancelled (DELETE) or taken over meanwhile gets no result stored.
            ours = await uow.jobs.extend_lease(job.id, job.attempts, now + self.lease)
        if not ours:
            log.warning("job.complete.lost_claim", stored=False)
            await delivery.ack()
            return
        await self.results.put(job.tenant_id, job.id, sealed, expires)
        del sealed
        keep = False
        async with self.uow(job.tenant_id) as uow:
            moved = await uow.jobs.finish(
                job.id,
                job.attempts,
                completed=True,
                now=now,
                result_expires_at=expires,
                pages=len(result.pages),
            )
            if moved:
                await audit.record(
                    uow,
                    self.clock,
                    job.tenant_id,
                    AuditAction.COMPLETED,
                    job_id=job.id,
                    fingerprint=job.fingerprint,
                    page_count=len(result.pages),
                    duration_ms=int(seconds * 1000),
                    result_sha256=digest,
                    outcome="completed",
                    key_version=version,
                    engine=result.engine,
                    parts=parts,
                )
                # In the transaction that moved the job: the event exists if and only if it completed.
                await emit_job_event(uow, self.clock, job, JOB_COMPLETED, None)
                await usage.count_completed(uow, job.tenant_id, now, (page.source for page in result.pages))
            else:
                # Only a result another claim completed, and nobody destroyed, may stay.
                keep = result_lives(await uow.jobs.get(job.tenant_id, job.id))
        if moved:
            log.info("job.completed", pages=len(result.pages), duration_ms=int(seconds * 1000))
            JOBS_FINISHED.inc("completed", tenant=job.tenant_id)
            JOB_SECONDS.observe(seconds)
            for page in result.pages:
                PAGES.inc(page.source, tenant=job.tenant_id)
            await self.destroy_document(job)
        else:
            # The job was cancelled (DELETE), or finished by another claim, after the check
            # above: the copy just stored is nobody's result, unless that other claim's.
            if not keep:
                await self.results.delete(job.tenant_id, job.id)
            log.warning("job.complete.lost_claim", stored=True, kept=keep)
        await delivery.ack()

    async def _on_failure(self, delivery: Delivery, job: Job, code: str, message: str, *, permanent: bool) -> None:
        if permanent or job.attempts >= job.attempt_limit:
            # A retryable cause (timeout, resource limit, an outage) may be fixed by an operator:
            # the sealed document stays for the replay window (docs/adr/0013-operations.md).
            hold = None if permanent or not self.replay_window else self.clock.now() + self.replay_window
            async with self.uow(job.tenant_id) as uow:
                moved = await fail_job(uow, self.clock, job, code, message, hold_until=hold)
            log.warning("job.failed", code=code, attempt=job.attempts, held=hold is not None)
            if moved and hold is None:  # counted as finished by fail_job
                await self.destroy_document(job)
            if permanent:
                await delivery.ack()
            else:
                await delivery.dead_letter(code)
                JOBS_DEAD_LETTERED.labels(code).inc()
            return
        async with self.uow(job.tenant_id) as uow:
            await uow.jobs.release(job.id, job.attempts)
        log.warning("job.retry", code=code, attempt=job.attempts)
        JOB_RETRIES.labels(code).inc()
        await delivery.retry(backoff_seconds(job.attempts))

    async def destroy_document(self, job: Job) -> None:
        """Delete the encrypted upload and record it once (PURGED, what=document)."""
        await destroy_document(self.uow, self.blobs, self.clock, job)
