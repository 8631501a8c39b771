"""The webhook dispatcher with a fake clock and a scripted transport: the 24-hour retry window and
the endpoint's disablement, claims and leases, the concurrency caps, erased tenants."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from contrackt.adapters.db.tables import webhook_events
from contrackt.api.app import create_app
from contrackt.bootstrap import Container
from contrackt.domain.audit import AuditAction
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.webhooks import RetryPolicy, SendOutcome
from contrackt.services.webhook_dispatch import WebhookDispatcher
from contrackt.services.webhooks import emit_job_event
from tests.unit.lifecycle_support import MovableClock


class ScriptedTransport:
    """No network: every host resolves to one public address; answers come from ``status``."""

    def __init__(self, status: int = 503, hold: asyncio.Event | None = None) -> None:
        self.status = status
        self.hold = hold
        self.posts: list[tuple[str, dict[str, str]]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> SendOutcome:
        self.posts.append((url, dict(headers)))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
        finally:
            self.in_flight -= 1
        return SendOutcome(self.status, None, 12)


async def _setup(
    container: Container,
    transport: ScriptedTransport,
    name: str = "acme",
    url: str = "https://hooks.example.com/in?sig=abc",
) -> tuple[str, str]:
    tenant_id = (await container.tenants.create(name)).tenant_id
    container.webhooks.transport = transport
    hook = await container.webhooks.add(tenant_id, url, ["job.completed"])
    return tenant_id, hook.webhook.id


async def _complete_job(container: Container, tenant_id: str) -> str:
    """Queue a job.completed event as the worker's finishing transaction does."""
    job = Job(id=new_id(), tenant_id=tenant_id, status=JobStatus.PROCESSING, created_at=container.clock.now())
    async with container.uow(tenant_id) as uow:
        await emit_job_event(uow, container.clock, job, "job.completed", None)
    return job.id


def _dispatcher(c: Container, transport: ScriptedTransport, **kw: object) -> WebhookDispatcher:
    values: dict[str, object] = {
        "policy": RetryPolicy(base_seconds=5.0, max_delay_seconds=7200.0, window_seconds=86400.0),
        "timeout_s": 10.0,
        "max_concurrency": 8,
        "jitter": lambda: 0.5,
    }
    values.update(kw)
    return WebhookDispatcher(c.uow, c.keyring, transport, c.clock, **values)  # type: ignore[arg-type]


async def test_an_endpoint_failing_for_24_hours_is_disabled_and_the_tenant_sees_why(
    container: Container,
) -> None:
    clock = MovableClock()
    container.clock = clock
    container.webhooks.clock = clock
    transport = ScriptedTransport(status=503)
    tenant_id, hook_id = await _setup(container, transport)
    job_id = await _complete_job(container, tenant_id)
    d = _dispatcher(container, transport)
    created = clock.now()
    attempt_times = []
    while True:
        if await d.run_once():
            attempt_times.append(clock.now())
            continue
        async with container.uow(tenant_id) as uow:
            hook = await uow.webhooks.get(tenant_id, hook_id)
            nxt = (await uow.conn.execute(sa.select(webhook_events.c.next_attempt_at))).scalars().all()
        if hook is not None and hook.disabled_at is not None:
            assert nxt == []  # its pending events went with it
            break
        assert len(nxt) == 1, "the event vanished without the endpoint being disabled"
        assert nxt[0] <= created + timedelta(hours=24), "an attempt planned after the 24-hour window"
        clock.offset += max(nxt[0] - clock.now(), timedelta())  # a fake clock: jump to the next attempt
    # The documented schedule: 5 s doubling, jitter 0.5 -> 3/4 of it, capped at 2 h (here 1.5 h),
    # the last retry on the 24-hour mark, then no more.
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(attempt_times)]
    print(f"\n{len(attempt_times)} attempts in 24 h; gaps (s): {[round(g) for g in gaps]}")
    expected = [d.policy.delay(n, 0.5).total_seconds() for n in range(1, len(gaps))]
    assert gaps[:-1] == pytest.approx(expected, abs=1.0)
    assert gaps[:5] == pytest.approx([3.75, 7.5, 15, 30, 60], abs=1.0)
    assert attempt_times[-1] - created == pytest.approx(timedelta(hours=24), abs=timedelta(seconds=2))
    assert len(transport.posts) == len(attempt_times)
    assert len({hdrs["webhook-id"] for _, hdrs in transport.posts}) == 1
    assert hook is not None and hook.disabled_reason is not None
    assert "24 h" in hook.disabled_reason and "HTTP 503" in hook.disabled_reason
    # After that: no more attempts, no more events for this endpoint, and GET shows why.
    await _complete_job(container, tenant_id)
    clock.advance(3600)
    assert await d.run_once() == 0
    app = create_app(container=container)
    key = await container.tenants.create_key(tenant_id)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            [shown] = (await client.get("/v1/webhooks", headers={"X-API-Key": key.api_key})).json()["webhooks"]
            rows = (
                await client.get(f"/v1/webhooks/{hook_id}/deliveries?limit=100", headers={"X-API-Key": key.api_key})
            ).json()["deliveries"]
    assert shown["disabled_at"] is not None and shown["disabled_reason"] == hook.disabled_reason
    assert rows[0]["outcome"] == "failed" and {r["outcome"] for r in rows[1:]} == {"retrying"}
    assert rows[0]["attempt"] == len(attempt_times)
    async with container.uow(tenant_id) as uow:
        actions = [r.event for r in await uow.audit.chain(tenant_id) if r.event.action == AuditAction.WEBHOOK_DISABLED]
    assert len(actions) == 1 and actions[0].job_id == job_id
    assert actions[0].details["url"] == "https://hooks.example.com/in"  # no query string


async def test_a_claimed_event_is_not_sent_twice_at_once_and_comes_back_after_a_lost_dispatcher(
    container: Container,
) -> None:
    clock = MovableClock()
    container.clock = clock
    container.webhooks.clock = clock
    transport = ScriptedTransport(status=200)
    tenant_id, _ = await _setup(container, transport)
    await _complete_job(container, tenant_id)
    first, second = _dispatcher(container, transport), _dispatcher(container, transport)
    [(event_id, owner)] = await _due(container)
    assert owner == tenant_id
    # The first dispatcher claims it and dies before sending (its process was killed).
    async with container.uow(tenant_id) as uow:
        claimed = await uow.webhook_deliveries.claim(event_id, clock.now(), clock.now(), clock.now() + first.lease)
    assert claimed is not None and claimed.attempts == 1
    assert await second.run_once() == 0 and transport.posts == []
    clock.advance(first.lease.total_seconds() + 1)
    assert await second.run_once() == 1
    assert [hdrs["webhook-id"] for _, hdrs in transport.posts] == [event_id]
    assert await _due(container, later=timedelta(days=2)) == []


async def _due(c: Container, later: timedelta = timedelta()) -> list[tuple[str, str]]:
    async with c.uow(system=True) as uow:
        return await uow.webhook_deliveries.due(c.clock.now() + later, c.clock.now() + later, 100)


async def test_a_hold_before_the_first_attempt_is_kept(container: Container) -> None:
    clock = MovableClock()
    container.clock = clock
    container.webhooks.clock = clock
    transport = ScriptedTransport(status=204)
    tenant_id, _ = await _setup(container, transport)
    await _complete_job(container, tenant_id)
    d = _dispatcher(container, transport, hold_new_s=5.0)
    assert await d.run_once() == 0
    clock.advance(4.5)
    assert await d.run_once() == 0
    clock.advance(1.0)
    assert await d.run_once() == 1 and len(transport.posts) == 1


async def test_deliveries_in_flight_are_capped_overall_and_per_tenant(container: Container) -> None:
    release = asyncio.Event()
    transport = ScriptedTransport(status=204, hold=release)
    a, _ = await _setup(container, transport, "a", "https://a.example/h")
    b, _ = await _setup(container, transport, "b", "https://b.example/h")
    for _ in range(6):
        await _complete_job(container, a)
    await _complete_job(container, b)
    d = _dispatcher(container, transport, max_concurrency=4)
    assert await d.step() == 3  # a's share is half the slots; b's one event takes another
    for _ in range(100):
        if transport.in_flight == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(url for url, _ in transport.posts) == ["https://a.example/h"] * 2 + ["https://b.example/h"]
    assert await d.step() == 0  # a at its share, nothing else due
    release.set()
    await d.drain()
    while await d.run_once():
        pass
    assert len(transport.posts) == 7 and transport.most_in_flight <= 4


async def test_an_erased_tenants_events_are_never_sent(container: Container) -> None:
    transport = ScriptedTransport(status=204)
    tenant_id, _ = await _setup(container, transport)
    await _complete_job(container, tenant_id)
    await container.tenants.erase(tenant_id, container.blobs, container.results)
    assert await _dispatcher(container, transport).run_once() == 0
    assert transport.posts == []
    async with container.uow(tenant_id) as uow:
        assert await uow.webhooks.list(tenant_id) == []
