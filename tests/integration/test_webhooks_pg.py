"""Webhooks on PostgreSQL as the service role sees them: row-level security on the new tables, the
dispatcher's one narrow system policy, and deliveries to a loopback receiver (two dispatchers, one send)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from standardwebhooks.webhooks import Webhook as StandardWebhook

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.tables import webhook_attempts, webhook_events, webhooks
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.adapters.webhooks.http import HttpWebhookTransport
from contrackt.domain.audit import AuditAction
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.webhooks import RetryPolicy
from contrackt.ports.clock import SystemClock
from contrackt.services.keyring import Keyring
from contrackt.services.outcomes import fail_job
from contrackt.services.tenants import TenantService
from contrackt.services.webhook_dispatch import WebhookDispatcher
from contrackt.services.webhooks import WebhookService
from tests.contract.services import FreshPostgres
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


@dataclass
class World:
    uow: SqlUnitOfWorkFactory
    keyring: Keyring
    service: WebhookService
    a: str
    b: str
    secret_a: str
    hook_a: str
    hook_b: str
    rx: Receiver


@pytest.fixture
async def world(pg: FreshPostgres, tmp_path: Path) -> AsyncIterator[World]:
    from contrackt.adapters.keys.local import LocalKeyProvider

    uow = SqlUnitOfWorkFactory(make_engine(pg.service_url, pool_size=4))
    clock = SystemClock()
    keyring = Keyring(LocalKeyProvider(tmp_path / "master.key"), uow, clock)
    tenants = TenantService(uow, keyring, clock)
    transport = HttpWebhookTransport(allow_private=True, timeout_s=5.0)
    service = WebhookService(uow, keyring, clock, transport, allow_private=True, max_per_tenant=5)
    a = (await tenants.create("A")).tenant_id
    b = (await tenants.create("B")).tenant_id
    with Receiver() as rx:
        hook_a = await service.add(a, rx.url("/a?k=1"), ["job.failed"])
        hook_b = await service.add(b, rx.url("/b"), ["job.failed"])
        try:
            yield World(uow, keyring, service, a, b, hook_a.secret, hook_a.webhook.id, hook_b.webhook.id, rx)
        finally:
            await uow.close()


async def _fail_a_job(w: World, tenant_id: str) -> str:
    job = Job(id=new_id(), tenant_id=tenant_id, status=JobStatus.PENDING, created_at=datetime.now(UTC))
    async with w.uow(tenant_id) as u:
        await u.jobs.add(job)
    async with w.uow(tenant_id) as u:
        assert await fail_job(u, SystemClock(), job, "cancelled", "Deleted by the client")
    async with w.uow(tenant_id) as u:  # a second, racing failure moves nothing and emits nothing
        assert not await fail_job(u, SystemClock(), job, "cancelled", "Deleted by the client")
    return job.id


def _dispatcher(w: World) -> WebhookDispatcher:
    return WebhookDispatcher(
        w.uow,
        w.keyring,
        w.service.transport,
        SystemClock(),
        policy=RetryPolicy(base_seconds=0.1, max_delay_seconds=0.5, window_seconds=60),
        timeout_s=5.0,
        max_concurrency=4,
    )


async def test_tenants_cannot_see_each_others_webhooks_events_or_attempts(world: World) -> None:
    await _fail_a_job(world, world.a)
    await _fail_a_job(world, world.b)
    async with world.uow(world.a) as u:
        for table in (webhooks, webhook_events):
            owners = {str(r[0]) for r in await u.conn.execute(sa.select(table.c.tenant_id))}
            assert owners == {world.a}, table.name
        assert await u.webhooks.get(world.b, world.hook_b) is None
        res = await u.conn.execute(webhooks.update().where(webhooks.c.id == world.hook_b).values(url="https://x"))
        assert res.rowcount == 0
        res = await u.conn.execute(webhook_events.delete().where(webhook_events.c.tenant_id == world.b))
        assert res.rowcount == 0
    with pytest.raises(DBAPIError, match="row-level security"):
        async with world.uow(world.a) as u:
            await u.conn.execute(
                webhook_attempts.insert().values(
                    tenant_id=world.b,
                    webhook_id=world.hook_b,
                    event_id="msg_x",
                    event_type="job.failed",
                    job_id=new_id(),
                    attempt=1,
                    at=datetime.now(UTC),
                    duration_ms=1,
                    outcome="delivered",
                )
            )


async def test_the_dispatchers_system_scope_only_lists_due_events(world: World) -> None:
    await _fail_a_job(world, world.a)
    await _fail_a_job(world, world.b)
    now = datetime.now(UTC) + timedelta(seconds=1)
    async with world.uow(system=True) as u:
        due = await u.webhook_deliveries.due(now, now, 10)
        assert {tenant for _, tenant in due} == {world.a, world.b}
        # ... but never an endpoint (URL, sealed secret) nor an attempt, and it changes nothing.
        assert (await u.conn.execute(sa.select(sa.func.count()).select_from(webhooks))).scalar() == 0
        assert (await u.conn.execute(sa.select(sa.func.count()).select_from(webhook_attempts))).scalar() == 0
        assert await u.webhook_deliveries.claim(due[0][0], now, now, now + timedelta(minutes=1)) is None
        assert (await u.conn.execute(webhook_events.delete())).rowcount == 0
    with pytest.raises(DBAPIError, match="row-level security"):
        async with world.uow(system=True) as u:
            await u.conn.execute(
                webhook_events.insert().values(
                    id="msg_forged",
                    tenant_id=world.a,
                    webhook_id=world.hook_a,
                    job_id=new_id(),
                    type="job.failed",
                    body="{}",
                    created_at=now,
                    next_attempt_at=now,
                )
            )


async def test_two_dispatchers_over_postgres_send_each_event_once_signed(world: World) -> None:
    job_a = await _fail_a_job(world, world.a)
    job_b = await _fail_a_job(world, world.b)
    first, second = _dispatcher(world), _dispatcher(world)
    started = await asyncio.gather(first.run_once(), second.run_once())
    assert sum(started) >= 2
    got = await world.rx.wait(2)
    await asyncio.sleep(0.3)
    assert len(world.rx.all()) == 2
    by_path = {r.path: r for r in got}
    assert set(by_path) == {"/a?k=1", "/b"}
    payload = StandardWebhook(world.secret_a).verify(by_path["/a?k=1"].body, by_path["/a?k=1"].headers)
    assert payload["data"] == {
        "job_id": job_a,
        "status": "failed",
        "links": {
            "self": f"/v1/jobs/{job_a}",
            "result": f"/v1/jobs/{job_a}/result",
            "events": f"/v1/jobs/{job_a}/events",
        },
        "error": {"code": "cancelled", "message": "Deleted by the client"},
    }
    assert job_b in by_path["/b"].body.decode()
    for tenant, hook in ((world.a, world.hook_a), (world.b, world.hook_b)):
        [attempt] = await world.service.deliveries(tenant, hook)
        assert (attempt.attempt, attempt.outcome, attempt.status_code) == (1, "delivered", 204)
    async with world.uow(world.a) as u:
        delivered = [r.event for r in await u.audit.chain(world.a) if r.event.action == AuditAction.WEBHOOK_DELIVERED]
    assert len(delivered) == 1 and delivered[0].job_id == job_a
    assert delivered[0].details["url"].endswith("/a") and "k=1" not in str(delivered[0].details)
    assert await _dispatcher(world).run_once() == 0


async def test_concurrent_registrations_never_pass_the_per_tenant_cap(world: World) -> None:
    from contrackt.domain.errors import TooManyWebhooks

    outcomes = await asyncio.gather(
        *(world.service.add(world.a, world.rx.url(f"/n{i}"), ["job.completed"]) for i in range(8)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 4  # 5 allowed, 1 existed
    assert all(isinstance(o, TooManyWebhooks) for o in outcomes if isinstance(o, BaseException))
    assert len(await world.service.list_for_tenant(world.a)) == 5
