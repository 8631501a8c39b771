"""Job listing and usage counters on PostgreSQL, as the service role sees them (row-level security)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.tables import usage_daily
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.domain.errors import InvalidCursor
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.tenants import Principal
from contrackt.ports.clock import SystemClock
from contrackt.services import usage
from contrackt.services.keyring import Keyring
from contrackt.services.listing import JobListing
from contrackt.services.tenants import TenantService
from contrackt.services.usage import UsageService
from tests.contract.services import FreshPostgres

pytestmark = pytest.mark.integration


class World:
    def __init__(self, uow: SqlUnitOfWorkFactory, listing: JobListing, a: Principal, b: Principal) -> None:
        self.uow, self.listing, self.a, self.b = uow, listing, a, b


@pytest.fixture
async def world(pg: FreshPostgres, tmp_path: Path) -> AsyncIterator[World]:
    from contrackt.adapters.keys.local import LocalKeyProvider

    uow = SqlUnitOfWorkFactory(make_engine(pg.service_url, pool_size=8))
    clock = SystemClock()
    keyring = Keyring(LocalKeyProvider(tmp_path / "master.key"), uow, clock)
    tenants = TenantService(uow, keyring, clock)
    a = await tenants.authenticate((await tenants.create("A")).api_key)
    b = await tenants.authenticate((await tenants.create("B")).api_key)
    try:
        yield World(uow, JobListing(uow, keyring), a, b)
    finally:
        await uow.close()


async def add_jobs(w: World, tenant_id: str, count: int, at: datetime, status: JobStatus) -> list[str]:
    ids = [new_id() for _ in range(count)]
    async with w.uow(tenant_id) as u:
        for i, job_id in enumerate(ids):
            # Every third job shares its creation time with the previous one: ties go by id.
            stamp = at + timedelta(milliseconds=(i // 3) * 7)
            await u.jobs.add(Job(id=job_id, tenant_id=tenant_id, status=status, created_at=stamp))
    return ids


async def test_keyset_pages_on_postgres_hold_only_the_tenants_rows_newest_first(world: World) -> None:
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    mine = await add_jobs(world, world.a.tenant_id, 25, at, JobStatus.COMPLETED)
    mine += await add_jobs(world, world.a.tenant_id, 4, at + timedelta(seconds=1), JobStatus.PENDING)
    await add_jobs(world, world.b.tenant_id, 30, at, JobStatus.COMPLETED)
    async with world.uow(world.a.tenant_id) as u:
        rows = (await u.conn.execute(sa.text("SELECT id, created_at FROM jobs"))).all()  # type: ignore[attr-defined]
    expected = [str(r[0]) for r in sorted(rows, key=lambda r: (r[1], str(r[0])), reverse=True)]
    assert sorted(expected) == sorted(mine)  # RLS: tenant A's transaction sees only A's rows

    seen: list[str] = []
    cursor = None
    while True:
        page = await world.listing.page(world.a, limit=6, cursor=cursor)
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    pending = await world.listing.page(world.a, status="pending", limit=100)
    assert {j.id for j in pending.jobs} == set(mine[25:]) and pending.next_cursor is None

    # The query's tenant scope and RLS both hold: asking A's transaction for B's rows finds none.
    async with world.uow(world.a.tenant_id) as u:
        assert await u.jobs.page(world.b.tenant_id, status=None, before=None, limit=100) == []

    first = await world.listing.page(world.a, limit=6)
    assert first.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await world.listing.page(world.b, limit=6, cursor=first.next_cursor)


async def test_usage_counters_under_concurrency_and_rls(world: World) -> None:
    day = date(2026, 11, 27)
    at = datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC)

    async def finish(i: int) -> None:
        async with world.uow(world.a.tenant_id) as u:
            if i % 4 == 3:
                await usage.count_failed(u, world.a.tenant_id, at, "corrupt_pdf")
            else:
                await usage.count_completed(u, world.a.tenant_id, at, ["ocr", "text_layer", "ocr"][: 1 + i % 3])
            await asyncio.sleep(0.01)  # hold the row locks a moment: the transactions overlap

    await asyncio.gather(*(finish(i) for i in range(40)))
    report = await UsageService(world.uow, SystemClock()).report(world.a, day, day)
    assert report["totals"]["jobs"] == {"completed": 30, "failed": 10, "failed_by_code": {"corrupt_pdf": 10}}
    # i % 4 != 3 and i % 3 -> pages: 0 -> ocr; 1 -> ocr, text; 2 -> ocr, text, ocr
    pages = {"ocr": 0, "text_layer": 0}
    for i in range(40):
        if i % 4 != 3:
            for source in ["ocr", "text_layer", "ocr"][: 1 + i % 3]:
                pages[source] += 1
    assert report["totals"]["pages"] == {**pages, "total": sum(pages.values())}

    b_report = await UsageService(world.uow, SystemClock()).report(world.b, day, day)
    assert b_report["totals"]["jobs"]["completed"] == 0
    async with world.uow(world.b.tenant_id) as u:
        assert await u.usage.daily(world.a.tenant_id, day, day) == []  # RLS hides A's counters
        seen = (await u.conn.execute(sa.select(sa.func.count()).select_from(usage_daily))).scalar()  # type: ignore[attr-defined]
        assert seen == 0
    with pytest.raises(DBAPIError, match="row-level security"):
        async with world.uow(world.b.tenant_id) as u:
            await u.usage.add(world.a.tenant_id, day, {"jobs.completed": 1})
    with pytest.raises(DBAPIError, match="row-level security"):
        async with world.uow(system=True) as u:  # no system policy on usage: system tasks never write it
            await u.usage.add(world.a.tenant_id, day, {"jobs.completed": 1})


async def test_migration_0005_backfills_an_existing_postgres_database(pg: FreshPostgres, world: World) -> None:
    import asyncpg

    # Make the database look as it did before revision 0005, with finished jobs in it.
    admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))
    try:
        await admin.execute("DROP TABLE usage_daily")
        await admin.execute("DROP INDEX ix_jobs_tenant_status_created")
        await admin.execute("UPDATE alembic_version SET version_num = '0004'")
    finally:
        await admin.close()
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)  # 23:30 UTC: still 1 March, whatever the server's zone
    async with world.uow(world.a.tenant_id) as u:
        for status, code, pages in (("completed", None, 4), ("completed", None, 1), ("failed", "timeout", None)):
            job = Job(id=new_id(), tenant_id=world.a.tenant_id, status=JobStatus(status), created_at=late)
            job.completed_at, job.error_code, job.pages_total = late, code, pages
            await u.jobs.add(job)
    await asyncio.to_thread(pg.migrate)
    report = await UsageService(world.uow, SystemClock()).report(world.a, date(2026, 3, 1), date(2026, 3, 2))
    assert report["days"][0]["pages"] == {"text_layer": 0, "ocr": 0, "unknown": 5, "total": 5}
    assert report["days"][0]["jobs"] == {"completed": 2, "failed": 1, "failed_by_code": {"timeout": 1}}
    assert report["days"][1]["jobs"]["completed"] == 0
    async with world.uow(world.b.tenant_id) as u:  # the new table has its row-level security
        assert await u.usage.daily(world.a.tenant_id, date(2026, 3, 1), date(2026, 3, 1)) == []
