"""The event-stream watcher on PostgreSQL as the service role: its system-scope reads pass
row-level security (jobs and API keys of every tenant at once), tenant scope still sees one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.adapters.keys.local import LocalKeyProvider
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.ports.clock import SystemClock
from contrackt.services.keyring import Keyring
from contrackt.services.tenants import NewKey, TenantService
from contrackt.services.watch import JobWatcher
from tests.contract.services import FreshPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
async def uow(pg: FreshPostgres) -> AsyncIterator[SqlUnitOfWorkFactory]:
    factory = SqlUnitOfWorkFactory(make_engine(pg.service_url, pool_size=2))
    try:
        yield factory
    finally:
        await factory.close()


async def _job(uow: SqlUnitOfWorkFactory, key: NewKey) -> Job:
    job = Job(
        id=new_id(),
        tenant_id=key.tenant_id,
        status=JobStatus.PENDING,
        created_at=datetime.now(UTC),
        api_key_id=key.key_id,
        blob_key=f"{key.tenant_id}/x.enc",
    )
    async with uow(key.tenant_id) as u:
        await u.jobs.add(job)
    return job


async def test_watcher_reads_every_tenants_jobs_in_one_system_query(uow: SqlUnitOfWorkFactory, tmp_path: Path) -> None:
    clock = SystemClock()
    tenants = TenantService(uow, Keyring(LocalKeyProvider(tmp_path / "master.key"), uow, clock), clock)
    a, b = await tenants.create("A"), await tenants.create("B")
    job_a, job_b = await _job(uow, a), await _job(uow, b)

    # Tenant scope: RLS shows a tenant its own job only, even asked by id.
    async with uow(a.tenant_id) as u:
        assert [j.id for j in await u.jobs.get_many([job_a.id, job_b.id])] == [job_a.id]
        assert await u.api_keys.active_ids([a.key_id, b.key_id]) == {a.key_id}

    watcher = JobWatcher(uow, key_check_s=0)
    sub_a, sub_b = watcher.subscribe(job_a, a.key_id), watcher.subscribe(job_b, b.key_id)
    now = datetime.now(UTC)
    for key, job in ((a, job_a), (b, job_b)):
        async with uow(key.tenant_id) as u:
            assert await u.jobs.claim(job.id, now, now + timedelta(seconds=30)) is not None
            await u.jobs.set_progress(job.id, 1, 2)
    await watcher.tick()
    assert (sub_a.job.status, sub_a.job.pages_done) == (JobStatus.PROCESSING, 1)
    assert (sub_b.job.status, sub_b.job.pages_done) == (JobStatus.PROCESSING, 1)
    assert sub_a.ended is None and sub_b.ended is None

    assert await tenants.revoke_key(b.key_id)
    await watcher.tick()
    assert sub_b.ended == "unauthorized"
    assert sub_a.ended is None
