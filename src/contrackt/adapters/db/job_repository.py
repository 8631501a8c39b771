"""The jobs' SQL repository: intake, the conditional claim and its lease, results' and documents'
lifetimes, retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from contrackt.adapters.db.repositories import _Repo
from contrackt.adapters.db.tables import (
    jobs,
    outbox,
    tenants,
)
from contrackt.domain.errors import IdempotencyConflict
from contrackt.domain.jobs import MAX_ATTEMPTS, Job, JobStatus

# pg_advisory_xact_lock(space, key): the two-key form never meets the one-key locks
# (audit chain appends lock hashtext(tenant_id) in the one-key space).
INFLIGHT_LOCK_SPACE = 0x4354


_JOB_FIELDS = (
    "id tenant_id api_key_id fingerprint document_digest key_version blob_key size_bytes engine mode "
    "pages_total pages_done attempts error_code error_message created_at started_at "
    "completed_at lease_until result_expires_at result_purged_at purged_at delete_on_read "
    "document_hold_until attempt_limit media_type pages"
).split()

TERMINAL = (JobStatus.COMPLETED.value, JobStatus.FAILED.value)


def _job(m: Any) -> Job:
    values = {f: m[f] for f in _JOB_FIELDS}
    values["id"] = str(values["id"])
    if values["attempt_limit"] is None:
        values["attempt_limit"] = MAX_ATTEMPTS
    values["tenant_id"] = str(values["tenant_id"])
    if values["api_key_id"] is not None:
        values["api_key_id"] = str(values["api_key_id"])
    return Job(status=JobStatus(m["status"]), **values)


class SqlJobRepository(_Repo):
    async def add(self, job: Job, idempotency_key_hash: str | None = None) -> None:
        values = {f: getattr(job, f) for f in _JOB_FIELDS}
        stmt = jobs.insert().values(status=job.status.value, idempotency_key_hash=idempotency_key_hash, **values)
        if idempotency_key_hash is None:
            await self.conn.execute(stmt)
            return
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(stmt)
        except IntegrityError as exc:
            raise IdempotencyConflict() from exc

    async def get(self, tenant_id: str, job_id: str) -> Job | None:
        row = (await self.conn.execute(jobs.select().where(jobs.c.id == job_id, jobs.c.tenant_id == tenant_id))).first()
        return _job(row._mapping) if row else None

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        rows = await self.conn.execute(jobs.select().where(jobs.c.id.in_(list(job_ids))))
        return [_job(r._mapping) for r in rows]

    async def find_by_idempotency(self, tenant_id: str, key_hash: str) -> Job | None:
        row = (
            await self.conn.execute(
                jobs.select().where(jobs.c.tenant_id == tenant_id, jobs.c.idempotency_key_hash == key_hash)
            )
        ).first()
        return _job(row._mapping) if row else None

    async def claim(
        self, job_id: str, now: datetime, lease_until: datetime, *, max_inflight: int | None = None
    ) -> Job | None:
        claimable = sa.or_(
            jobs.c.status == JobStatus.PENDING.value,
            # The holder stopped renewing its lease (it died): take the job over at once
            # instead of waiting for the reconciler. The last attempt is the reconciler's
            # to fail (worker_lost).
            sa.and_(
                jobs.c.status == JobStatus.PROCESSING.value,
                jobs.c.lease_until < now,
                jobs.c.attempts < sa.func.coalesce(jobs.c.attempt_limit, MAX_ATTEMPTS),
            ),
        )
        conditions = [jobs.c.id == job_id, claimable]
        if max_inflight is not None:
            await self._lock_inflight(job_id)
            busy = jobs.alias("busy")
            live = (
                sa.select(sa.func.count())
                .select_from(busy)
                .where(
                    busy.c.tenant_id == jobs.c.tenant_id,
                    busy.c.status == JobStatus.PROCESSING.value,
                    busy.c.lease_until >= now,
                )
                .scalar_subquery()
            )
            override = sa.select(tenants.c.max_inflight).where(tenants.c.id == jobs.c.tenant_id).scalar_subquery()
            conditions.append(live < sa.func.coalesce(override, max_inflight))
        res = await self.conn.execute(
            jobs.update()
            .where(*conditions)
            .values(
                status=JobStatus.PROCESSING.value,
                attempts=jobs.c.attempts + 1,
                started_at=sa.func.coalesce(jobs.c.started_at, now),
                lease_until=lease_until,
            )
        )
        if res.rowcount != 1:
            return None
        row = (await self.conn.execute(jobs.select().where(jobs.c.id == job_id))).first()
        return _job(row._mapping) if row else None

    async def _lock_inflight(self, job_id: str) -> None:
        """PostgreSQL: claims of one tenant's jobs run one at a time (until commit), so two
        workers cannot both see "3 of 4 in flight" and both start a job. SQLite needs
        nothing: its units of work already run one at a time."""
        if self.conn.dialect.name != "postgresql":
            return
        await self.conn.execute(
            sa.text(
                "SELECT pg_advisory_xact_lock(:space, hashtext(tenant_id::text)) FROM jobs WHERE id = CAST(:id AS uuid)"
            ),
            {"space": INFLIGHT_LOCK_SPACE, "id": job_id},
        )

    async def set_progress(self, job_id: str, done: int, total: int) -> None:
        await self.conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PROCESSING.value)
            .values(pages_done=done, pages_total=total)
        )

    async def extend_lease(self, job_id: str, attempt: int, lease_until: datetime) -> bool:
        res = await self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.PROCESSING.value,
                jobs.c.attempts == attempt,
            )
            .values(lease_until=lease_until)
        )
        return res.rowcount == 1

    async def finish(
        self,
        job_id: str,
        attempt: int,
        *,
        completed: bool,
        now: datetime,
        error_code: str | None = None,
        error_message: str | None = None,
        result_expires_at: datetime | None = None,
        pages: int | None = None,
        document_hold_until: datetime | None = None,
    ) -> bool:
        status = JobStatus.COMPLETED if completed else JobStatus.FAILED
        extra = {} if pages is None else {"pages_total": pages, "pages_done": pages}
        res = await self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.PROCESSING.value,
                jobs.c.attempts == attempt,
            )
            .values(
                status=status.value,
                completed_at=now,
                lease_until=None,
                error_code=error_code,
                error_message=error_message,
                result_expires_at=result_expires_at,
                document_hold_until=document_hold_until,
                **extra,
            )
        )
        return res.rowcount == 1

    async def fail_pending(self, job_id: str, now: datetime, code: str, message: str) -> bool:
        res = await self.conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
            .values(
                status=JobStatus.FAILED.value,
                completed_at=now,
                error_code=code,
                error_message=message,
            )
        )
        return res.rowcount == 1

    async def release(self, job_id: str, attempt: int, *, requeue_after: datetime | None = None) -> bool:
        res = await self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.PROCESSING.value,
                jobs.c.attempts == attempt,
            )
            .values(status=JobStatus.PENDING.value, lease_until=requeue_after)
        )
        return res.rowcount == 1

    async def hold_requeue(self, job_id: str, now: datetime, until: datetime) -> bool:
        res = await self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.PENDING.value,
                sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
            )
            .values(lease_until=until)
        )
        return res.rowcount == 1

    async def mark_purged(self, job_id: str, at: datetime) -> bool:
        res = await self.conn.execute(
            jobs.update().where(jobs.c.id == job_id, jobs.c.purged_at.is_(None)).values(purged_at=at, blob_key=None)
        )
        return res.rowcount == 1

    async def expire_result(self, job_id: str, at: datetime) -> bool:
        res = await self.conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.result_purged_at.is_(None))
            .values(
                result_expires_at=sa.case(
                    (sa.or_(jobs.c.result_expires_at.is_(None), jobs.c.result_expires_at > at), at),
                    else_=jobs.c.result_expires_at,
                ),
                result_purged_at=at,
            )
        )
        return res.rowcount == 1

    async def replay(self, job_id: str, now: datetime) -> bool:
        res = await self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.FAILED.value,
                jobs.c.purged_at.is_(None),
                jobs.c.blob_key.is_not(None),
                jobs.c.document_hold_until > now,
            )
            .values(
                status=JobStatus.PENDING.value,
                attempt_limit=jobs.c.attempts + MAX_ATTEMPTS,
                error_code=None,
                error_message=None,
                completed_at=None,
                lease_until=None,
                document_hold_until=None,
                pages_done=0,
            )
        )
        return res.rowcount == 1

    async def end_hold(self, job_id: str, before: datetime | None = None) -> bool:
        conditions = [
            jobs.c.id == job_id,
            jobs.c.status == JobStatus.FAILED.value,
            jobs.c.document_hold_until.is_not(None),
        ]
        if before is not None:
            conditions.append(jobs.c.document_hold_until <= before)
        res = await self.conn.execute(jobs.update().where(*conditions).values(document_hold_until=None))
        return res.rowcount == 1

    async def find_held(self, before: datetime | None = None, limit: int = 500) -> list[Job]:
        stmt = jobs.select().where(jobs.c.status == JobStatus.FAILED.value, jobs.c.document_hold_until.is_not(None))
        if before is not None:
            stmt = stmt.where(jobs.c.document_hold_until <= before)
        rows = await self.conn.execute(stmt.order_by(jobs.c.completed_at).limit(limit))
        return [_job(r._mapping) for r in rows]

    async def tenants_finished_before(self, cut: datetime) -> list[str]:
        rows = await self.conn.execute(
            sa.select(jobs.c.tenant_id).where(jobs.c.status.in_(TERMINAL), jobs.c.completed_at < cut).distinct()
        )
        return sorted(str(r[0]) for r in rows)

    async def prune_finished(self, tenant_id: str, cut: datetime) -> int:
        res = await self.conn.execute(
            jobs.delete().where(
                jobs.c.tenant_id == tenant_id,
                jobs.c.status.in_(TERMINAL),
                jobs.c.completed_at < cut,
                jobs.c.document_hold_until.is_(None),
            )
        )
        # Outbox rows only ever name jobs; those this old were relayed (or their job is gone).
        await self.conn.execute(outbox.delete().where(outbox.c.tenant_id == tenant_id, outbox.c.created_at < cut))
        return int(res.rowcount)

    async def find_expired_results(self, now: datetime, limit: int = 500) -> list[Job]:
        rows = await self.conn.execute(
            jobs.select()
            .where(
                jobs.c.status == JobStatus.COMPLETED.value,
                jobs.c.result_purged_at.is_(None),
                jobs.c.result_expires_at <= now,
            )
            .order_by(jobs.c.result_expires_at)
            .limit(limit)
        )
        return [_job(r._mapping) for r in rows]

    async def find_stale(self, pending_before: datetime, lease_before: datetime) -> list[Job]:
        rows = await self.conn.execute(
            jobs.select()
            .where(
                sa.or_(
                    sa.and_(
                        jobs.c.status == JobStatus.PENDING.value,
                        jobs.c.created_at < pending_before,
                        sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < lease_before),
                    ),
                    sa.and_(
                        jobs.c.status == JobStatus.PROCESSING.value,
                        jobs.c.lease_until < lease_before,
                    ),
                )
            )
            .order_by(jobs.c.created_at)
            .limit(500)
        )
        return [_job(r._mapping) for r in rows]

    async def count_unfinished(self, tenant_id: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).where(
            jobs.c.status.in_([JobStatus.PENDING.value, JobStatus.PROCESSING.value])
        )
        if tenant_id is not None:
            stmt = stmt.where(jobs.c.tenant_id == tenant_id)
        row = (await self.conn.execute(stmt)).first()
        return int(row[0]) if row else 0

    async def count_finished_since(self, since: datetime, tenant_id: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).where(
            jobs.c.status.in_([JobStatus.COMPLETED.value, JobStatus.FAILED.value]),
            jobs.c.completed_at >= since,
        )
        if tenant_id is not None:
            stmt = stmt.where(jobs.c.tenant_id == tenant_id)
        row = (await self.conn.execute(stmt)).first()
        return int(row[0]) if row else 0

    async def list_for_tenant(self, tenant_id: str) -> list[Job]:
        rows = await self.conn.execute(jobs.select().where(jobs.c.tenant_id == tenant_id).order_by(jobs.c.created_at))
        return [_job(r._mapping) for r in rows]

    async def page(
        self, tenant_id: str, *, status: JobStatus | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[Job]:
        stmt = jobs.select().where(jobs.c.tenant_id == tenant_id)
        if status is not None:
            stmt = stmt.where(jobs.c.status == status.value)
        if before is not None:
            at, job_id = before
            # The first condition is implied by the second; it is there so that the index on
            # (tenant_id[, status], created_at) seeks to the position instead of scanning up to it.
            stmt = stmt.where(
                jobs.c.created_at <= at,
                sa.or_(jobs.c.created_at < at, sa.and_(jobs.c.created_at == at, jobs.c.id < job_id)),
            )
        rows = await self.conn.execute(stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit))
        return [_job(r._mapping) for r in rows]
