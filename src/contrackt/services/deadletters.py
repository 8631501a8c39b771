"""Dead-letter operations (`contrackt dlq list|show|replay|drop`): the database decides, the queue delivers.

A dead letter is a job that failed with a retryable code on its last attempt. Its sealed
document is kept for the replay window (``jobs.document_hold_until``); see
docs/adr/0013-operations.md.

* **replay**: one transaction moves the job ``failed -> pending`` (conditional: still failed,
  its document still held and not purged), raises its attempts budget by MAX_ATTEMPTS,
  records REPLAYED and adds an outbox row; the relay publishes it. Only then is the entry
  taken off the dead-letter queue. A job whose document is gone is reported as
  ``needs_resubmission`` and its entry stays (drop it once the tenant knows).
* **drop**: one transaction ends the hold and records DROPPED; then the document is destroyed
  (PURGED ``reason=dlq_dropped``, so the job's deletion receipt becomes available), then the
  entry is removed.

Nothing here shows or logs document data: entries carry job id, tenant id, reason,
deliveries and times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import structlog

from contrackt.domain.audit import SERVICE_CHAIN, AuditAction
from contrackt.domain.ids import parse_id
from contrackt.domain.jobs import Job, JobMessage, JobStatus
from contrackt.ports.blobstore import BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.deadletters import DeadLetter, DeadLetterQueue
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.services import audit
from contrackt.services.outcomes import destroy_document

log = structlog.get_logger("contrackt.dlq")


class UnknownDeadLetter(LookupError):
    """Neither a dead-letter entry nor a job with a held document has this id."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


@dataclass(frozen=True)
class Listed:
    """One entry as an operator sees it: no document data."""

    entry_id: str | None  # None: the job has a held document but no entry (found by job id)
    job_id: str
    tenant_id: str
    reason: str
    deliveries: int
    dead_at: str | None
    job_status: str  # pending | processing | completed | failed | missing
    document: str  # "held until <time>" | "destroyed" | "in queue" | "unknown"
    replayable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    entry_id: str | None
    job_id: str
    tenant_id: str
    outcome: str  # replayed | needs_resubmission | already_queued | already_completed | job_missing | dropped
    entry_removed: bool
    document_destroyed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state(job: Job | None) -> str:
    """What a replay finds when it does not move the job itself."""
    if job is None:
        return "job_missing"
    if job.status in (JobStatus.PENDING, JobStatus.PROCESSING):
        return "already_queued"  # alive in the database: the queue or the reconciler delivers it
    if job.status is JobStatus.COMPLETED:
        return "already_completed"
    return "needs_resubmission"  # failed, and its document is gone (or its window is over)


class DeadLetterService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        dead: DeadLetterQueue,
        blobs: BlobStore,
        clock: Clock,
    ) -> None:
        self.uow = uow
        self.dead = dead
        self.blobs = blobs
        self.clock = clock

    # --- reading ------------------------------------------------------------------
    async def _jobs(self, job_ids: list[str]) -> dict[str, Job]:
        ids = [i for i in (parse_id(j) for j in job_ids) if i is not None]
        async with self.uow(system=True) as uow:
            return {job.id: job for job in await uow.jobs.get_many(ids)}

    def _listed(self, entry: DeadLetter, job: Job | None, now: datetime) -> Listed:
        if job is None or job.tenant_id != entry.message.tenant_id:
            status, document, replayable = "missing", "unknown", False
        else:
            status = job.status.value
            held = job.document_hold_until
            if job.status is JobStatus.FAILED and held is not None and job.purged_at is None:
                document, replayable = f"held until {_iso(held)}", held > now
            elif job.purged_at is not None or job.status.terminal:
                document, replayable = "destroyed", False
            else:
                document, replayable = "in queue", False
        return Listed(
            entry.entry_id if entry.entry_id else None,
            entry.message.job_id,
            entry.message.tenant_id,
            entry.reason,
            entry.deliveries,
            _iso(entry.dead_at),
            status,
            document,
            replayable,
        )

    async def entries(self, limit: int = 1000) -> list[Listed]:
        entries = await self.dead.list(limit)
        jobs = await self._jobs([e.message.job_id for e in entries])
        now = self.clock.now()
        return [self._listed(e, jobs.get(e.message.job_id), now) for e in entries]

    async def _resolve(self, ident: str) -> list[DeadLetter]:
        """The entries ``ident`` names: an entry id, or a job id (every entry of that job; with
        none, the job itself when its document is held)."""
        job_id = parse_id(ident)
        if job_id is None:
            entry = await self.dead.get(ident)
            if entry is None:
                raise UnknownDeadLetter(ident)
            return [entry]
        entry = await self.dead.get(ident)  # the embedded view's entry ids are job ids
        if entry is not None:
            return [entry]
        found = [e for e in await self.dead.list(limit=1_000_000) if e.message.job_id == job_id]
        if found:
            return found
        job = (await self._jobs([job_id])).get(job_id)
        if job is None or job.document_hold_until is None:
            raise UnknownDeadLetter(ident)
        message = JobMessage(job.id, job.tenant_id, job.blob_key or "", job.attempts)
        return [DeadLetter("", message, job.error_code or "", job.attempts, job.completed_at)]

    async def show(self, ident: str) -> list[Listed]:
        entries = await self._resolve(ident)
        jobs = await self._jobs([e.message.job_id for e in entries])
        now = self.clock.now()
        return [self._listed(e, jobs.get(e.message.job_id), now) for e in entries]

    # --- replay -------------------------------------------------------------------
    async def replay(self, ident: str) -> list[Outcome]:
        return [await self._replay(entry) for entry in await self._resolve(ident)]

    async def replay_all(self, limit: int = 100_000) -> list[Outcome]:
        return [await self._replay(entry) for entry in await self.dead.list(limit)]

    async def _replay(self, entry: DeadLetter) -> Outcome:
        msg = entry.message
        tenant_id, job_id = parse_id(msg.tenant_id), parse_id(msg.job_id)
        outcome = "job_missing"
        if tenant_id is not None and job_id is not None:
            outcome = await self._replay_job(tenant_id, job_id, entry.reason)
        removed = False
        if entry.entry_id and outcome in ("replayed", "already_queued", "already_completed"):
            # The database holds the job's truth now; the entry has nothing more to say.
            removed = await self.dead.remove(entry.entry_id, outcome)
        log.info("dlq.replay", job_id=msg.job_id, tenant_id=msg.tenant_id, outcome=outcome)
        return Outcome(entry.entry_id or None, msg.job_id, msg.tenant_id, outcome, removed)

    async def _replay_job(self, tenant_id: str, job_id: str, reason: str) -> str:
        async with self.uow(tenant_id) as uow:
            job = await uow.jobs.get(tenant_id, job_id)
        if job is None or job.status is not JobStatus.FAILED:
            return _state(job)
        if job.blob_key is None or not await self.blobs.exists(job.blob_key):
            return "needs_resubmission"
        now = self.clock.now()
        async with self.uow(tenant_id) as uow:
            if not await uow.jobs.replay(job.id, now):
                # Replayed by someone else meanwhile, or its window ended, or it was deleted.
                return _state(await uow.jobs.get(tenant_id, job_id))
            await audit.record(
                uow,
                self.clock,
                tenant_id,
                AuditAction.REPLAYED,
                job_id=job.id,
                fingerprint=job.fingerprint,
                attempt=job.attempts,
                outcome=job.error_code,
                reason=reason[:64] or None,
            )
            await uow.outbox.add(JobMessage(job.id, tenant_id, job.blob_key, job.attempts), now)
        return "replayed"

    # --- drop ---------------------------------------------------------------------
    async def drop(self, ident: str) -> list[Outcome]:
        return [await self._drop(entry) for entry in await self._resolve(ident)]

    async def _drop(self, entry: DeadLetter) -> Outcome:
        msg = entry.message
        tenant_id, job_id = parse_id(msg.tenant_id), parse_id(msg.job_id)
        job: Job | None = None
        if tenant_id is not None and job_id is not None:
            async with self.uow(tenant_id) as uow:
                job = await uow.jobs.get(tenant_id, job_id)
        ended = False
        if job is not None:
            async with self.uow(job.tenant_id) as uow:
                ended = job.document_hold_until is not None and await uow.jobs.end_hold(job.id)
                await audit.record(
                    uow,
                    self.clock,
                    job.tenant_id,
                    AuditAction.DROPPED,
                    job_id=job.id,
                    fingerprint=job.fingerprint,
                    outcome=job.status.value,
                    reason=entry.reason[:64] or None,
                    what="document" if ended else None,
                )
        else:
            # No such job (pruned, or not ours): the drop is still on the record.
            async with self.uow(SERVICE_CHAIN) as uow:
                await audit.record(
                    uow, self.clock, SERVICE_CHAIN, AuditAction.DROPPED, job_id=job_id, outcome="job_missing"
                )
        destroyed = False
        if ended and job is not None:
            destroyed = await destroy_document(self.uow, self.blobs, self.clock, job, reason="dlq_dropped")
        removed = bool(entry.entry_id) and await self.dead.remove(entry.entry_id, "dropped")
        log.info("dlq.drop", job_id=msg.job_id, tenant_id=msg.tenant_id, document_destroyed=destroyed)
        return Outcome(entry.entry_id or None, msg.job_id, msg.tenant_id, "dropped", removed, destroyed)
