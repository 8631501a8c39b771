"""Results are read once when asked (delete_on_read) and never outlive their TTL: 410 afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.db.tables import tenants
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.settings import Settings
from contrackt.worker.runtime import WorkerRuntime
from tests.fakes import FakeExtractor, fake_pdf
from tests.unit.lifecycle_support import MovableClock, auth, job_chain, new_tenant, wait_done, wait_purged


async def _submit_and_wait(client: httpx.AsyncClient, t: dict[str, str], query: str = "") -> str:
    r = await client.post(f"/v1/extract{query}", headers=auth(t), content=fake_pdf("Contrato"))
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    assert (await wait_done(client, job_id, auth(t)))["status"] == "completed"
    return job_id


async def test_delete_on_read_per_request(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    job_id = await _submit_and_wait(client, t, "?delete_on_read=true")
    first = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))
    assert first.status_code == 200 and first.json()["text"] == "Contrato"
    second = await client.get(f"/v1/jobs/{job_id}/result?format=text", headers=auth(t))
    assert (second.status_code, second.json()["code"]) == (410, "gone")
    assert await container.results.get(t["tenant_id"], job_id) is None
    whats = [
        r.event.details.get("what")
        for r in await job_chain(container, t["tenant_id"], job_id)
        if r.event.action == "PURGED"
    ]
    assert "result" in whats

    kept = await _submit_and_wait(client, t)  # without the flag the result can be read again
    for _ in range(2):
        assert (await client.get(f"/v1/jobs/{kept}/result", headers=auth(t))).status_code == 200


async def test_delete_on_read_per_tenant(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    async with container.uow(t["tenant_id"]) as uow:
        await uow.conn.execute(tenants.update().where(tenants.c.id == t["tenant_id"]).values(delete_on_read=True))
    job_id = await _submit_and_wait(client, t)
    assert (await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).status_code == 200
    assert (await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).status_code == 410


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def clocked_client(settings: Settings, clock: MovableClock) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings, clock=clock)
    app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                yield http, c
    finally:
        await c.close()


async def test_expired_result_is_410(
    clocked_client: tuple[httpx.AsyncClient, Container], clock: MovableClock, settings: Settings
) -> None:
    client, c = clocked_client
    t = await new_tenant(c)
    job_id = await _submit_and_wait(client, t)
    await wait_purged(c, t["tenant_id"], job_id)
    assert (await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).status_code == 200
    clock.advance(settings.result_ttl_seconds + 1)
    r = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))
    assert (r.status_code, r.json()["code"]) == (410, "gone")
    # and the sweeper deletes the expired ciphertext itself
    await c.sweeper.sweep()
    async with c.uow(system=True) as uow:
        left = (await uow.conn.execute(sa.text("SELECT count(*) FROM results"))).scalar_one()
    assert left == 0
    # the expiry is recorded once in the tenant's audit trail
    await c.sweeper.sweep()
    async with c.uow(t["tenant_id"]) as uow:
        purged = [
            r.event.details
            for r in await uow.audit.chain(t["tenant_id"])
            if r.event.job_id == job_id and r.event.action.value == "PURGED"
        ]
    assert purged == [{"what": "document"}, {"what": "result", "reason": "expired"}]
