"""SQL repositories (one per aggregate), bound to a unit of work's connection."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from contrackt.adapters.db.tables import (
    api_keys,
    audit_checkpoints,
    audit_logs,
    audit_prune_gate,
    jobs,
    outbox,
    tenant_keys,
    tenants,
)
from contrackt.domain.audit import GENESIS_HASH, SERVICE_CHAIN, AuditAction, AuditEvent, ChainRow, chain_hash
from contrackt.domain.errors import IdempotencyConflict
from contrackt.domain.jobs import MAX_ATTEMPTS, Job, JobMessage, JobStatus
from contrackt.domain.tenants import ApiKey, Tenant

# pg_advisory_xact_lock(space, key): the two-key form never meets the one-key locks
# (audit chain appends lock hashtext(tenant_id) in the one-key space).
INFLIGHT_LOCK_SPACE = 0x4354


class _Repo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn


class SqlTenantRepository(_Repo):
    async def add(self, tenant: Tenant) -> None:
        await self.conn.execute(
            tenants.insert().values(
                id=tenant.id,
                name=tenant.name,
                created_at=tenant.created_at,
                fingerprint_key_wrapped=tenant.fingerprint_key_wrapped,
                delete_on_read=tenant.delete_on_read,
                rate_limit_extract=tenant.rate_limit_extract,
                rate_limit_status=tenant.rate_limit_status,
                max_inflight=tenant.max_inflight,
                max_backlog=tenant.max_backlog,
            )
        )

    async def get(self, tenant_id: str) -> Tenant | None:
        row = (await self.conn.execute(tenants.select().where(tenants.c.id == tenant_id))).first()
        return _tenant(row._mapping) if row else None

    async def list(self) -> list[Tenant]:
        rows = await self.conn.execute(tenants.select().order_by(tenants.c.created_at))
        return [_tenant(r._mapping) for r in rows]

    async def mark_erased(self, tenant_id: str, at: datetime) -> None:
        await self.conn.execute(
            tenants.update().where(tenants.c.id == tenant_id).values(erased_at=at, fingerprint_key_wrapped=None)
        )

    async def set_limits(self, tenant_id: str, max_inflight: int | None, max_backlog: int | None) -> bool:
        res = await self.conn.execute(
            tenants.update().where(tenants.c.id == tenant_id).values(max_inflight=max_inflight, max_backlog=max_backlog)
        )
        return res.rowcount == 1


def _tenant(m: Any) -> Tenant:
    return Tenant(
        id=str(m["id"]),
        name=m["name"],
        created_at=m["created_at"],
        fingerprint_key_wrapped=m["fingerprint_key_wrapped"],
        delete_on_read=bool(m["delete_on_read"]),
        rate_limit_extract=m["rate_limit_extract"],
        rate_limit_status=m["rate_limit_status"],
        erased_at=m["erased_at"],
        max_inflight=m["max_inflight"],
        max_backlog=m["max_backlog"],
    )


class SqlTenantKeyRepository(_Repo):
    async def add(self, tenant_id: str, version: int, wrapped: bytes, at: datetime) -> None:
        await self.conn.execute(
            tenant_keys.insert().values(tenant_id=tenant_id, version=version, wrapped_key=wrapped, created_at=at)
        )

    async def get(self, tenant_id: str, version: int) -> bytes | None:
        row = (
            await self.conn.execute(
                sa.select(tenant_keys.c.wrapped_key).where(
                    tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.version == version
                )
            )
        ).first()
        return row[0] if row else None

    async def current_version(self, tenant_id: str) -> int | None:
        row = (
            await self.conn.execute(
                sa.select(sa.func.max(tenant_keys.c.version)).where(
                    tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.wrapped_key.is_not(None)
                )
            )
        ).first()
        return int(row[0]) if row and row[0] is not None else None

    async def destroy_all(self, tenant_id: str, at: datetime) -> int:
        res = await self.conn.execute(
            tenant_keys.update()
            .where(tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.wrapped_key.is_not(None))
            .values(wrapped_key=None, destroyed_at=at)
        )
        return int(res.rowcount)


class SqlApiKeyRepository(_Repo):
    async def add(self, key: ApiKey) -> None:
        await self.conn.execute(
            api_keys.insert().values(
                id=key.id,
                tenant_id=key.tenant_id,
                prefix=key.prefix,
                key_hash=key.key_hash,
                created_at=key.created_at,
            )
        )

    async def find_by_prefix(self, prefix: str) -> ApiKey | None:
        row = (await self.conn.execute(api_keys.select().where(api_keys.c.prefix == prefix))).first()
        return _api_key(row._mapping) if row else None

    async def active_ids(self, key_ids: Sequence[str]) -> set[str]:
        if not key_ids:
            return set()
        rows = await self.conn.execute(
            sa.select(api_keys.c.id).where(api_keys.c.id.in_(list(key_ids)), api_keys.c.revoked_at.is_(None))
        )
        return {str(r[0]) for r in rows}

    async def list(self, tenant_id: str) -> list[ApiKey]:
        rows = await self.conn.execute(
            api_keys.select().where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
        )
        return [_api_key(r._mapping) for r in rows]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        res = await self.conn.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=at)
        )
        return bool(res.rowcount)

    async def revoke_all(self, tenant_id: str, at: datetime) -> int:
        res = await self.conn.execute(
            api_keys.update()
            .where(api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return int(res.rowcount)


def _api_key(m: Any) -> ApiKey:
    return ApiKey(
        id=str(m["id"]),
        tenant_id=str(m["tenant_id"]),
        prefix=m["prefix"],
        key_hash=m["key_hash"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


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


class SqlAuditRepository(_Repo):
    async def append(self, event: AuditEvent) -> ChainRow:
        if self.conn.dialect.name == "postgresql":
            # Serialise appends per tenant so the chain never forks.
            await self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": event.tenant_id})
        last = (
            await self.conn.execute(
                sa.select(audit_logs.c.seq, audit_logs.c.row_hash)
                .where(audit_logs.c.tenant_id == event.tenant_id)
                .order_by(audit_logs.c.seq.desc())
                .limit(1)
            )
        ).first()
        if last is None:
            # No rows: a new chain, or one the retention pruned whole; then it goes on after
            # its checkpoint (docs/adr/0013-operations.md).
            last = (
                await self.conn.execute(
                    sa.select(audit_checkpoints.c.seq, audit_checkpoints.c.row_hash)
                    .where(audit_checkpoints.c.tenant_id == event.tenant_id)
                    .order_by(audit_checkpoints.c.seq.desc())
                    .limit(1)
                )
            ).first()
        seq = (last[0] + 1) if last else 1
        prev = last[1] if last else GENESIS_HASH
        row_hash = chain_hash(prev, event, seq)
        await self.conn.execute(
            audit_logs.insert().values(
                tenant_id=event.tenant_id,
                seq=seq,
                job_id=event.job_id,
                action=event.action.value,
                at=event.at,
                api_key_id=event.api_key_id,
                fingerprint=event.fingerprint,
                details=event.details,
                prev_hash=prev,
                row_hash=row_hash,
            )
        )
        await self.conn.execute(
            tenants.update().where(tenants.c.id == event.tenant_id).values(audit_seq=seq, audit_head=row_hash)
        )
        return ChainRow(seq=seq, event=event, prev_hash=prev, row_hash=row_hash)

    async def head(self, tenant_id: str) -> tuple[int, str | None]:
        row = (
            await self.conn.execute(
                sa.select(tenants.c.audit_seq, tenants.c.audit_head).where(tenants.c.id == tenant_id)
            )
        ).first()
        return (int(row[0]), row[1]) if row else (0, None)

    async def chain(self, tenant_id: str) -> list[ChainRow]:
        rows = await self.conn.execute(
            audit_logs.select().where(audit_logs.c.tenant_id == tenant_id).order_by(audit_logs.c.id)
        )
        return [_chain_row(r._mapping) for r in rows]

    async def job_events(self, tenant_id: str, job_id: str) -> list[ChainRow]:
        rows = await self.conn.execute(
            audit_logs.select()
            .where(audit_logs.c.tenant_id == tenant_id, audit_logs.c.job_id == job_id)
            .order_by(audit_logs.c.id)
        )
        return [_chain_row(r._mapping) for r in rows]

    async def tenant_ids(self) -> list[str]:
        rows = await self.conn.execute(sa.select(audit_logs.c.tenant_id).distinct())
        return sorted(str(r[0]) for r in rows)

    async def tenants_with_rows_before(self, cut: datetime) -> list[str]:
        rows = await self.conn.execute(sa.select(audit_logs.c.tenant_id).where(audit_logs.c.at < cut).distinct())
        return sorted(str(r[0]) for r in rows)

    async def prune_point(self, tenant_id: str, cut: datetime) -> ChainRow | None:
        first_young = (
            await self.conn.execute(
                sa.select(sa.func.min(audit_logs.c.seq)).where(
                    audit_logs.c.tenant_id == tenant_id, audit_logs.c.at >= cut
                )
            )
        ).scalar()
        stmt = audit_logs.select().where(audit_logs.c.tenant_id == tenant_id)
        if first_young is not None:
            stmt = stmt.where(audit_logs.c.seq < first_young)
        row = (await self.conn.execute(stmt.order_by(audit_logs.c.seq.desc()).limit(1))).first()
        return _chain_row(row._mapping) if row else None

    async def prune(self, tenant_id: str, upto_seq: int, cut: datetime) -> int:
        if self.conn.dialect.name == "postgresql":
            # The one way to delete audit rows there (SECURITY DEFINER; it re-checks everything).
            await self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": tenant_id})
            deleted = (
                await self.conn.execute(
                    sa.text("SELECT contrackt_audit_prune(CAST(:t AS uuid), :s)"), {"t": tenant_id, "s": upto_seq}
                )
            ).scalar()
            return int(deleted or 0)
        # SQLite: open the gate for this transaction only; the triggers check it row by row.
        await self.conn.execute(audit_prune_gate.insert().values(tenant_id=tenant_id, upto_seq=upto_seq, cut=cut))
        try:
            res = await self.conn.execute(
                audit_logs.delete().where(audit_logs.c.tenant_id == tenant_id, audit_logs.c.seq <= upto_seq)
            )
            await self.conn.execute(
                audit_checkpoints.delete().where(
                    audit_checkpoints.c.tenant_id == tenant_id, audit_checkpoints.c.seq < upto_seq
                )
            )
        finally:
            await self.conn.execute(audit_prune_gate.delete().where(audit_prune_gate.c.tenant_id == tenant_id))
        return int(res.rowcount)

    async def heads(self) -> dict[str, tuple[int, str]]:
        rows = await self.conn.execute(
            sa.select(tenants.c.id, tenants.c.audit_seq, tenants.c.audit_head).where(tenants.c.audit_seq > 0)
        )
        out = {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
        # The service chain has no tenant row to record its head: its last row is its head.
        last = (
            await self.conn.execute(
                sa.select(audit_logs.c.seq, audit_logs.c.row_hash)
                .where(audit_logs.c.tenant_id == SERVICE_CHAIN)
                .order_by(audit_logs.c.seq.desc())
                .limit(1)
            )
        ).first()
        if last is not None:
            out[SERVICE_CHAIN] = (int(last[0]), str(last[1]))
        return out


def _chain_row(m: Any) -> ChainRow:
    ev = AuditEvent(
        tenant_id=str(m["tenant_id"]),
        action=AuditAction(m["action"]),
        at=m["at"],
        job_id=str(m["job_id"]) if m["job_id"] is not None else None,
        api_key_id=str(m["api_key_id"]) if m["api_key_id"] is not None else None,
        fingerprint=m["fingerprint"],
        details=dict(m["details"]),
    )
    return ChainRow(seq=int(m["seq"]), event=ev, prev_hash=m["prev_hash"], row_hash=m["row_hash"])


class SqlOutboxRepository(_Repo):
    async def add(self, message: JobMessage, at: datetime) -> None:
        await self.conn.execute(
            outbox.insert().values(
                tenant_id=message.tenant_id,
                job_id=message.job_id,
                payload=message.to_dict(),
                created_at=at,
            )
        )

    async def take(self, limit: int) -> list[tuple[int, JobMessage]]:
        stmt = (
            sa.select(outbox.c.id, outbox.c.payload)
            .where(outbox.c.sent_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = await self.conn.execute(stmt)
        return [(int(r[0]), JobMessage.from_dict(dict(r[1]))) for r in rows]

    async def mark_sent(self, ids: list[int], at: datetime) -> None:
        if ids:
            await self.conn.execute(outbox.update().where(outbox.c.id.in_(ids)).values(sent_at=at))
