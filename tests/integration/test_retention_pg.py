"""Audit retention on PostgreSQL, as the service role: the SECURITY DEFINER pruning function is the one
way to delete audit rows, it refuses everything but old rows below a checkpoint, and the external
checkpoint catches an administrator who truncates a chain and rewrites its recorded head."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from contrackt.adapters.checkpoints.file import FileCheckpointSink
from contrackt.adapters.db.postgres_admin import migrate
from contrackt.bootstrap import Container, build
from contrackt.domain.audit import AuditAction
from contrackt.domain.checkpoints import ChainCut
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.services import audit
from contrackt.services.audit import verify
from contrackt.services.checkpoints import CheckpointService
from contrackt.services.retention import RetentionService
from tests.contract.services import FreshPostgres
from tests.unit.lifecycle_support import MovableClock

pytestmark = pytest.mark.integration

YEAR = timedelta(days=365)


@pytest.fixture
async def c(pg: FreshPostgres, tmp_path: Path) -> AsyncIterator[Container]:
    clock = MovableClock()
    container = build(
        pg.settings(
            home=tmp_path / "home", storage_url="memory://", audit_checkpoint_url=f"file://{tmp_path / 'anchors'}"
        ),
        clock=clock,
    )
    yield container
    await container.close()


async def finished_job(c: Container, tenant_id: str) -> str:
    now = c.clock.now()
    job = Job(id=new_id(), tenant_id=tenant_id, status=JobStatus.COMPLETED, created_at=now, completed_at=now)
    async with c.uow(tenant_id) as uow:
        await uow.jobs.add(job)
        for action in (AuditAction.RECEIVED, AuditAction.PROCESSING, AuditAction.COMPLETED):
            await audit.record(uow, c.clock, tenant_id, action, job_id=job.id)
    return job.id


async def history(c: Container) -> tuple[str, str]:
    """A tenant with a job six years ago and one last year; (tenant, recent job)."""
    clock: MovableClock = c.clock  # type: ignore[assignment]
    clock.offset = -6 * YEAR
    tenant_id = (await c.tenants.create("acme")).tenant_id
    await finished_job(c, tenant_id)
    clock.offset = -YEAR
    recent = await finished_job(c, tenant_id)
    clock.offset = timedelta()
    return tenant_id, recent


def retention(c: Container) -> RetentionService:
    return RetentionService(c.uow, c.signer, c.clock, retention_days=c.settings.audit_retention_days)


async def test_the_service_role_prunes_through_the_function_and_verify_passes(c: Container) -> None:
    tenant_id, recent = await history(c)
    report = await retention(c).apply()
    assert (report.chains, report.audit_rows, report.jobs, report.checkpoints, report.skipped) == (1, 3, 1, 1, {})
    async with c.uow(tenant_id) as uow:
        rows = await uow.audit.chain(tenant_id)
        assert [j.id for j in await uow.jobs.list_for_tenant(tenant_id)] == [recent]
    assert rows[0].seq == 4 and rows[-1].event.action is AuditAction.RETENTION
    [chain] = await verify(c.uow, tenant_id, public_key=await c.signer.public_key_raw())
    assert chain.problems == [] and chain.starts_after == 3


async def _scoped(conn: asyncpg.Connection, tenant_id: str) -> None:
    await conn.execute("SELECT set_config('app.current_tenant', $1, true)", tenant_id)


async def test_the_service_role_cannot_delete_or_change_otherwise(c: Container, pg: FreshPostgres) -> None:
    tenant_id, _ = await history(c)
    other, _ = await history(c)
    async with c.uow(tenant_id) as uow:
        rows = await uow.audit.chain(tenant_id)
    young = rows[-1]
    svc = await asyncpg.connect(pg.dsn(pg.service_url))
    try:
        # no DELETE privilege at all, not even with the pruning flag set by hand
        async with svc.transaction():
            await _scoped(svc, tenant_id)
            await svc.execute("SELECT set_config('contrackt.audit_prune', 'on', true)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await svc.execute("DELETE FROM audit_logs WHERE seq = 1")
        for stmt in ("UPDATE audit_checkpoints SET seq = 0", "DELETE FROM audit_checkpoints", "TRUNCATE audit_logs"):
            async with svc.transaction():
                await _scoped(svc, tenant_id)
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await svc.execute(stmt)
        # the function: no checkpoint, no pruning
        async with svc.transaction():
            await _scoped(svc, tenant_id)
            with pytest.raises(asyncpg.RaiseError, match="no checkpoint at seq 3"):
                await svc.fetchval("SELECT contrackt_audit_prune($1::uuid, 3)", tenant_id)
        # a checkpoint at a young row (the service may insert one): refused by the floor
        async with svc.transaction():
            await _scoped(svc, tenant_id)
            await svc.execute(
                "INSERT INTO audit_checkpoints (tenant_id, seq, row_hash, row_at, cut, made_at, key_id, signature) "
                "VALUES ($1::uuid, $2, $3, now(), now(), now(), 'k', 's')",
                tenant_id,
                young.seq,
                young.row_hash,
            )
            with pytest.raises(asyncpg.RaiseError, match="not all older than 1826 days"):
                await svc.fetchval("SELECT contrackt_audit_prune($1::uuid, $2)", tenant_id, young.seq)
        # another tenant's rows: not while scoped to this one, and not unscoped
        async with svc.transaction():
            await _scoped(svc, tenant_id)
            with pytest.raises(asyncpg.RaiseError, match="not scoped to this tenant"):
                await svc.fetchval("SELECT contrackt_audit_prune($1::uuid, 3)", other)
        async with svc.transaction():
            with pytest.raises(asyncpg.RaiseError, match="not scoped to this tenant"):
                await svc.fetchval("SELECT contrackt_audit_prune($1::uuid, 3)", tenant_id)
    finally:
        await svc.close()
    admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))
    try:
        assert await admin.fetchval("SELECT count(*) FROM audit_logs WHERE tenant_id = $1::uuid", tenant_id) == 6
        # the owner's (and the admin's) DELETE meets the trigger without the function's flag
        async with admin.transaction():
            await admin.execute(
                "INSERT INTO audit_checkpoints (tenant_id, seq, row_hash, row_at, cut, made_at, key_id, signature) "
                "VALUES ($1::uuid, 99, 'x', now(), now(), now(), 'k', 's')",
                tenant_id,
            )
        for stmt in ("DELETE FROM audit_logs", "DELETE FROM audit_checkpoints", "UPDATE audit_checkpoints SET seq = 0"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await admin.execute(stmt)
        grants = await admin.fetch(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = 'audit_checkpoints' AND grantee = $1",
            pg.service_role,
        )
        assert sorted(g["privilege_type"] for g in grants) == ["INSERT", "SELECT"]
        definer = await admin.fetchrow(
            "SELECT prosecdef, pg_get_userbyid(proowner) AS owner FROM pg_proc WHERE proname = 'contrackt_audit_prune'"
        )
        assert definer is not None and definer["prosecdef"] and definer["owner"] == pg.owner_role
    finally:
        await admin.close()


async def test_the_floor_is_the_databases_not_the_callers(c: Container, pg: FreshPostgres) -> None:
    tenant_id, _ = await history(c)
    # migrate with a ten-year retention: six-year-old rows must now stay, whatever the service asks
    await asyncio.to_thread(migrate, pg.settings(audit_retention_days=3650))
    report = await retention(c).apply()  # this service still believes in five years
    assert report.audit_rows == 0 and "not all older than 3650 days" in report.skipped[tenant_id]
    async with c.uow(tenant_id) as uow:
        assert (await uow.audit.chain(tenant_id))[0].seq == 1
        assert await uow.checkpoints.latest(tenant_id) is None  # the checkpoint went with the refusal


async def test_truncation_with_a_rewritten_head_is_caught_on_postgres(c: Container, pg: FreshPostgres) -> None:
    tenant_id, _ = await history(c)
    for _ in range(2):
        await finished_job(c, tenant_id)
    sink = FileCheckpointSink.from_url(str(c.settings.audit_checkpoint_url))
    await CheckpointService(c.uow, c.signer, c.clock, sink).export()
    async with c.uow(tenant_id) as uow:
        rows = await uow.audit.chain(tenant_id)
    keep = rows[-4]
    admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))  # a superuser: triggers off, rows gone
    try:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute("DELETE FROM audit_logs WHERE tenant_id = $1::uuid AND seq > $2", tenant_id, keep.seq)
            await admin.execute(
                "UPDATE tenants SET audit_seq = $2, audit_head = $3 WHERE id = $1::uuid",
                tenant_id,
                keep.seq,
                keep.row_hash,
            )
    finally:
        await admin.close()
    key = await c.signer.public_key_raw()
    assert (await verify(c.uow, tenant_id, public_key=key))[0].problems == []  # the gap, without an anchor
    external = await CheckpointService(c.uow, c.signer, c.clock, sink).newest()
    assert external is not None and external.signed
    [chain] = await verify(c.uow, tenant_id, public_key=key, external=external)
    assert chain.problems == [
        f"chain ends at seq {keep.seq} but the external checkpoint of "
        f"{external.made_at.isoformat(timespec='seconds')} records seq {rows[-1].seq} "
        "(rows removed at the end and the head rewritten)"
    ]


async def test_a_checkpoint_at_a_row_of_another_hash_opens_nothing(c: Container) -> None:
    tenant_id, _ = await history(c)
    async with c.uow(tenant_id) as uow:
        row = (await uow.audit.chain(tenant_id))[2]
        await uow.checkpoints.add(ChainCut(tenant_id, 3, "0" * 64, row.event.at, row.event.at, row.event.at, "k", "s"))
    with pytest.raises(Exception, match="no checkpoint at seq 3"):
        async with c.uow(tenant_id) as uow:
            await uow.audit.prune(tenant_id, 3, c.clock.now() - 5 * YEAR)
