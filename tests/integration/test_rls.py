"""Row-level security, roles and grants on PostgreSQL, as the service role sees them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.tables import TENANT_TABLES, jobs, results, tenant_keys, tenants
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.domain.audit import AuditAction
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobMessage, JobStatus
from contrackt.ports.clock import SystemClock
from contrackt.services import audit
from contrackt.services.keyring import Keyring
from contrackt.services.tenants import TenantService
from tests.contract.services import FreshPostgres

pytestmark = pytest.mark.integration


class World:
    def __init__(self, pg: FreshPostgres, uow: SqlUnitOfWorkFactory, a: str, b: str, job_a: str, job_b: str) -> None:
        self.pg, self.uow, self.a, self.b, self.job_a, self.job_b = pg, uow, a, b, job_a, job_b


async def _job(uow: SqlUnitOfWorkFactory, tenant_id: str) -> str:
    job = Job(
        id=new_id(),
        tenant_id=tenant_id,
        status=JobStatus.PENDING,
        created_at=datetime.now(UTC),
        blob_key=f"{tenant_id}/x.enc",
    )
    async with uow(tenant_id) as u:
        await u.jobs.add(job)
        await u.outbox.add(JobMessage(job.id, tenant_id, job.blob_key or ""), job.created_at)
        await audit.record(u, SystemClock(), tenant_id, AuditAction.RECEIVED, job_id=job.id)
        await u.conn.execute(
            results.insert().values(
                job_id=job.id, tenant_id=tenant_id, ciphertext=b"c", expires_at=datetime.now(UTC) + timedelta(minutes=5)
            )
        )
    return job.id


@pytest.fixture
async def world(pg: FreshPostgres, tmp_path: Path) -> AsyncIterator[World]:
    from contrackt.adapters.keys.local import LocalKeyProvider

    uow = SqlUnitOfWorkFactory(make_engine(pg.service_url, pool_size=2))
    clock = SystemClock()
    service = TenantService(uow, Keyring(LocalKeyProvider(tmp_path / "master.key"), uow, clock), clock)
    a = (await service.create("A")).tenant_id
    b = (await service.create("B")).tenant_id
    job_a, job_b = await _job(uow, a), await _job(uow, b)
    try:
        yield World(pg, uow, a, b, job_a, job_b)
    finally:
        await uow.close()


async def _service_conn(pg: FreshPostgres) -> asyncpg.Connection:
    return await asyncpg.connect(pg.dsn(pg.service_url))


async def test_no_tenant_set_sees_no_rows(world: World) -> None:
    conn = await _service_conn(world.pg)
    try:
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # ...while the admin sees that rows exist.
        admin = await asyncpg.connect(world.pg.dsn(world.pg.admin_target_url))
        try:
            assert await admin.fetchval("SELECT count(*) FROM jobs") == 2
        finally:
            await admin.close()
    finally:
        await conn.close()


async def test_tenant_cannot_read_or_write_another_tenants_rows(world: World) -> None:
    async with world.uow(world.a) as u:
        assert await u.jobs.get(world.b, world.job_b) is None
        assert await u.tenants.get(world.b) is None
        assert await u.audit.chain(world.b) == []
        assert [j.id for j in await u.jobs.list_for_tenant(world.b)] == []
        rows = (await u.conn.execute(sa.select(jobs.c.tenant_id))).all()
        assert {str(r[0]) for r in rows} == {world.a}
        # Blind update of B's job: RLS hides the row.
        res = await u.conn.execute(jobs.update().where(jobs.c.id == world.job_b).values(status="failed"))
        assert res.rowcount == 0
    with pytest.raises(DBAPIError, match="row-level security"):
        async with world.uow(world.a) as u:
            await u.jobs.add(
                Job(id=new_id(), tenant_id=world.b, status=JobStatus.PENDING, created_at=datetime.now(UTC))
            )
    with pytest.raises(DBAPIError, match="row-level security"):
        async with world.uow(world.a) as u:
            await u.conn.execute(jobs.update().where(jobs.c.id == world.job_a).values(tenant_id=world.b))


async def test_pooled_connection_reused_by_another_tenant(world: World) -> None:
    engine = create_async_engine(world.pg.service_url, pool_size=1, max_overflow=0)
    uow = SqlUnitOfWorkFactory(engine)
    try:
        pids = set()
        for tenant, job in ((world.a, world.job_a), (world.b, world.job_b), (world.a, world.job_a)):
            async with uow(tenant) as u:
                pids.add((await u.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar())
                seen = {str(r[0]) for r in await u.conn.execute(sa.select(jobs.c.id))}
                assert seen == {job}
        assert len(pids) == 1  # really the same connection
        async with engine.connect() as conn:  # no unit of work: nothing carried over
            scope = (
                await conn.execute(
                    sa.text("SELECT current_setting('app.current_tenant', true), current_setting('app.system', true)")
                )
            ).one()
            assert scope[0] in (None, "") and scope[1] in (None, "")
            assert (await conn.execute(sa.select(sa.func.count()).select_from(jobs))).scalar() == 0
    finally:
        await engine.dispose()


async def test_system_scope_is_narrow(world: World) -> None:
    async with world.uow(system=True) as u:
        assert {t.id for t in await u.tenants.list()} == {world.a, world.b}
        assert len(await u.jobs.find_stale(datetime.now(UTC) + timedelta(days=1), datetime.now(UTC))) == 2
        assert set(await u.audit.tenant_ids()) == {world.a, world.b}
        # Keys are never visible to system work; live results neither.
        assert (await u.conn.execute(sa.select(sa.func.count()).select_from(tenant_keys))).scalar() == 0
        assert (await u.conn.execute(sa.select(sa.func.count()).select_from(results))).scalar() == 0
        # No job may be changed by system work.
        res = await u.conn.execute(jobs.update().values(status="failed"))
        assert res.rowcount == 0
        taken = await u.outbox.take(10)
        assert len(taken) == 2
        await u.outbox.mark_sent([i for i, _ in taken], datetime.now(UTC))
    with pytest.raises(DBAPIError, match="row-level security"):
        async with world.uow(system=True) as u:
            await u.conn.execute(tenants.insert().values(id=new_id(), name="x", created_at=datetime.now(UTC)))
    # purge_expired may delete expired results of every tenant, and nothing else.
    async with world.uow(world.a) as u:
        await u.conn.execute(results.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    async with world.uow(system=True) as u:
        res = await u.conn.execute(results.delete())
        assert res.rowcount == 1
    async with world.uow(world.b) as u:
        assert (await u.conn.execute(sa.select(sa.func.count()).select_from(results))).scalar() == 1


async def test_every_tenant_table_forces_rls(pg: FreshPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn(pg.admin_target_url))
    try:
        rows = await conn.fetch(
            "SELECT relname, relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) AS owner "
            "FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        )
        by_name = {r["relname"]: r for r in rows}
        for table in TENANT_TABLES:
            assert by_name[table]["relrowsecurity"], table
            assert by_name[table]["relforcerowsecurity"], table
        assert {r["owner"] for r in rows} == {pg.owner_role}
        policies = await conn.fetch("SELECT tablename, policyname FROM pg_policies")
        assert {p["tablename"] for p in policies if p["policyname"] == "tenant_isolation"} == set(TENANT_TABLES)
        # Any view must be security_invoker.
        views = await conn.fetch(
            "SELECT relname, reloptions FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'v'"
        )
        for v in views:
            assert "security_invoker=true" in (v["reloptions"] or []), v["relname"]
    finally:
        await conn.close()


async def test_service_role_is_unprivileged(pg: FreshPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn(pg.admin_target_url))
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = $1",
            pg.service_role,
        )
        assert role is not None
        assert not role["rolsuper"] and not role["rolbypassrls"]
        assert not role["rolcreatedb"] and not role["rolcreaterole"]
        assert role["rolcanlogin"]
        owner = await conn.fetchrow(
            "SELECT rolcanlogin, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", pg.owner_role
        )
        assert owner is not None and not owner["rolcanlogin"] and not owner["rolsuper"] and not owner["rolbypassrls"]
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = $1)",
            pg.service_role,
        )
        assert owned == 0
        assert not await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", pg.service_role, pg.owner_role)
    finally:
        await conn.close()
    svc = await _service_conn(pg)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await svc.execute("CREATE TABLE sneaky (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await svc.execute("ALTER TABLE jobs DISABLE ROW LEVEL SECURITY")
    finally:
        await svc.close()


async def test_audit_logs_reject_update_and_delete(world: World) -> None:
    svc = await _service_conn(world.pg)
    try:
        async with svc.transaction():
            await svc.execute("SELECT set_config('app.current_tenant', $1, true)", world.a)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await svc.execute("UPDATE audit_logs SET action = 'x'")
        async with svc.transaction():
            await svc.execute("SELECT set_config('app.current_tenant', $1, true)", world.a)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await svc.execute("DELETE FROM audit_logs")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await svc.execute("TRUNCATE audit_logs")
    finally:
        await svc.close()
    # Even the admin (superuser, past RLS and grants) meets the append-only trigger.
    admin = await asyncpg.connect(world.pg.dsn(world.pg.admin_target_url))
    try:
        for stmt in ("UPDATE audit_logs SET action = 'x'", "DELETE FROM audit_logs", "TRUNCATE audit_logs"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await admin.execute(stmt)
        assert await admin.fetchval("SELECT count(*) FROM audit_logs") > 0
    finally:
        await admin.close()


async def test_migrate_twice_is_idempotent(world: World) -> None:
    pg = world.pg
    admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))
    try:
        before = await admin.fetch("SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies ORDER BY 1, 2")
        jobs_before = await admin.fetchval("SELECT count(*) FROM jobs")
    finally:
        await admin.close()
    await asyncio.to_thread(pg.migrate)
    admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))
    try:
        after = await admin.fetch("SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies ORDER BY 1, 2")
        assert [tuple(r) for r in before] == [tuple(r) for r in after]
        assert await admin.fetchval("SELECT count(*) FROM jobs") == jobs_before
        assert await admin.fetchval("SELECT version_num FROM alembic_version") == "0006"
    finally:
        await admin.close()
    async with world.uow(world.a) as u:  # the service still works with its password
        assert await u.jobs.get(world.a, world.job_a) is not None
