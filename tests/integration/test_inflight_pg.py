"""The per-tenant in-flight cap on PostgreSQL: concurrent claims from many workers (separate
connections, READ COMMITTED, row-level security) never start more than the cap."""

from __future__ import annotations

import asyncio
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
from contrackt.services.tenants import TenantService
from tests.contract.services import FreshPostgres

pytestmark = pytest.mark.integration


async def _pending(uow: SqlUnitOfWorkFactory, tenant_id: str, n: int) -> list[str]:
    ids = [new_id() for _ in range(n)]
    async with uow(tenant_id) as u:
        for job_id in ids:
            await u.jobs.add(
                Job(id=job_id, tenant_id=tenant_id, status=JobStatus.PENDING, created_at=datetime.now(UTC))
            )
    return ids


async def _claim_all(uow: SqlUnitOfWorkFactory, tenant_id: str, ids: list[str], cap: int) -> int:
    async def one(job_id: str) -> bool:
        now = datetime.now(UTC)
        async with uow(tenant_id) as u:
            job = await u.jobs.claim(job_id, now, now + timedelta(seconds=30), max_inflight=cap)
            await asyncio.sleep(0.05)  # the audit row and the rest of the claim's transaction
        return job is not None

    return sum(await asyncio.gather(*(one(j) for j in ids)))


async def test_concurrent_claims_never_exceed_the_cap(pg: FreshPostgres, tmp_path: Path) -> None:
    uow = SqlUnitOfWorkFactory(make_engine(pg.service_url, pool_size=12))
    clock = SystemClock()
    tenants = TenantService(uow, Keyring(LocalKeyProvider(tmp_path / "master.key"), uow, clock), clock)
    try:
        a = (await tenants.create("A")).tenant_id
        b = (await tenants.create("B")).tenant_id
        # B has four jobs in flight: they do not count against A.
        b_ids = await _pending(uow, b, 4)
        assert await _claim_all(uow, b, b_ids, cap=10) == 4
        a_ids = await _pending(uow, a, 10)
        assert await _claim_all(uow, a, a_ids, cap=3) == 3
        assert await _claim_all(uow, a, a_ids, cap=3) == 0, "still three in flight"
        # The tenant's own override wins over the deployment's default.
        await tenants.set_limits(a, max_inflight=5, max_backlog=None)
        assert await _claim_all(uow, a, a_ids, cap=3) == 2
        async with uow(a) as u:
            assert sum(j.status is JobStatus.PROCESSING for j in await u.jobs.list_for_tenant(a)) == 5
            # A job whose lease ran out no longer counts: its worker is gone.
            stuck = next(j for j in await u.jobs.list_for_tenant(a) if j.status is JobStatus.PROCESSING)
            await u.jobs.extend_lease(stuck.id, stuck.attempts, datetime.now(UTC) - timedelta(seconds=1))
        assert await _claim_all(uow, a, a_ids, cap=3) == 1
        async with uow(system=True) as u:
            assert await u.jobs.count_unfinished() == 14
        async with uow(a) as u:
            assert await u.jobs.count_unfinished(a) == 10
    finally:
        await uow.close()
