"""`contrackt dlq` over PostgreSQL with Redis Streams and with Kafka: a job that failed on every attempt
is listed with its reason and deliveries, replayed through the database and the outbox once fixed,
or dropped with its document destroyed; the CLI prints no document data.

Each Redis test uses a stream of its own, each Kafka test a topic and a consumer group of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner, Result

from contrackt.bootstrap import Container, build, make_dead_letters
from contrackt.cli import main
from contrackt.domain.jobs import JobStatus
from contrackt.domain.tenants import Principal
from contrackt.services import processing
from contrackt.services.deadletters import DeadLetterService
from contrackt.services.dispatch import relay_outbox
from contrackt.settings import Settings
from tests.contract.services import FreshPostgres, drop_redis_queue, service, unique
from tests.fakes import fake_pdf
from tests.unit.test_dlq import FlakyExtractor, last_json

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processing, "backoff_seconds", lambda attempt: 0.05)


@pytest.fixture(params=["redis", "kafka"])
async def world(
    request: pytest.FixtureRequest, pg: FreshPostgres, tmp_path: Path
) -> AsyncIterator[tuple[Container, FlakyExtractor]]:
    name = unique("ctk-test-dlq-")
    if request.param == "redis":
        url = f"{service('REDIS')}/0/{name}"
    else:
        url = f"kafka://{service('KAFKA')}/{name}?partitions=2&group={name}"
    settings = pg.settings(home=tmp_path / "home", queue_url=url, replay_window_hours=12)
    c = build(settings)
    extractor = FlakyExtractor()
    c.attach_extractor(extractor)
    try:
        yield c, extractor
    finally:
        await c.close()
        if request.param == "redis":
            await drop_redis_queue(service("REDIS"), name)


async def drive(c: Container, done: Callable[[], Awaitable[bool]], timeout: float = 90.0) -> None:
    """The worker's steps by hand: relay the outbox, handle what the queue hands out, until ``done``."""
    assert c.processing is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await done():
        assert loop.time() < deadline, "the job did not get there in time"
        await relay_outbox(c.uow, c.queue, c.clock)
        delivery = await c.queue.receive("it-consumer", 0.5)
        if delivery is not None:
            await c.processing.handle(delivery)


def status(c: Container, tenant_id: str, job_id: str, wanted: JobStatus) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with c.uow(tenant_id) as uow:
            job = await uow.jobs.get(tenant_id, job_id)
        return job is not None and job.status is wanted

    return check


async def failed_job(c: Container) -> tuple[str, str]:
    key = await c.tenants.create("acme")
    principal = Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)
    job = (await c.intake.submit(principal, fake_pdf("Contrato"))).job
    await drive(c, status(c, key.tenant_id, job.id, JobStatus.FAILED))
    return key.tenant_id, job.id


def dlq(c: Container) -> DeadLetterService:
    return DeadLetterService(c.uow, make_dead_letters(c.settings, c.queue, c.uow), c.blobs, c.clock)


async def cli(settings: Settings, *args: str) -> Result:
    env = {
        "CONTRACKT_HOME": str(settings.home),
        "CONTRACKT_DATABASE_URL": settings.db_url,
        "CONTRACKT_QUEUE_URL": settings.queue_url,
    }

    def run() -> Result:
        with mock.patch("contrackt.logging.configure", lambda *a, **k: None):
            return CliRunner().invoke(main, list(args), env=env)

    return await asyncio.to_thread(run)


async def entries(c: Container) -> list[Any]:
    dead = dlq(c)
    try:
        return await dead.entries()
    finally:
        await dead.dead.close()


async def test_replay_through_the_database_and_the_outbox(world: tuple[Container, FlakyExtractor]) -> None:
    c, extractor = world
    tenant_id, job_id = await failed_job(c)
    listed = await cli(c.settings, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = last_json(listed)
    assert (row["job_id"], row["tenant_id"], row["reason"], row["deliveries"]) == (
        job_id,
        tenant_id,
        "resource_limit",
        3,
    )
    assert row["job_status"] == "failed" and row["replayable"] and row["dead_at"]
    assert "blob" not in listed.output and "fingerprint" not in listed.output and "Contrato" not in listed.output
    shown = await cli(c.settings, "dlq", "show", row["entry_id"], "--json")
    assert [r["job_id"] for r in last_json(shown)] == [job_id]

    extractor.broken = False
    replayed = await cli(c.settings, "dlq", "replay", job_id, "--json")
    assert replayed.exit_code == 0, replayed.output
    [outcome] = last_json(replayed)
    assert (outcome["outcome"], outcome["entry_removed"], outcome["entry_id"]) == ("replayed", True, row["entry_id"])
    await drive(c, status(c, tenant_id, job_id, JobStatus.COMPLETED))
    assert await entries(c) == []
    async with c.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
        chain = [r.event for r in await uow.audit.chain(tenant_id) if r.event.job_id == job_id]
    assert job is not None and (job.attempts, job.attempt_limit) == (4, 6)
    assert [e.action.value for e in chain].count("REPLAYED") == 1
    # replaying again: nothing left to replay
    again = await cli(c.settings, "dlq", "replay", job_id)
    assert again.exit_code == 1 and "no dead letter" in again.output


async def test_drop_removes_the_entry_and_destroys_the_document(world: tuple[Container, FlakyExtractor]) -> None:
    c, _ = world
    tenant_id, job_id = await failed_job(c)
    [entry] = await entries(c)
    assert len(await c.blobs.list()) == 1
    dropped = await cli(c.settings, "dlq", "drop", str(entry.entry_id), "--json")
    assert dropped.exit_code == 0, dropped.output
    [outcome] = last_json(dropped)
    assert (outcome["outcome"], outcome["entry_removed"], outcome["document_destroyed"]) == ("dropped", True, True)
    assert await entries(c) == []
    assert await c.blobs.list() == []
    async with c.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
        details = [(r.event.action.value, r.event.details) for r in await uow.audit.chain(tenant_id)]
    assert job is not None and job.status is JobStatus.FAILED and job.purged_at is not None
    assert ("DROPPED", {"outcome": "failed", "reason": "resource_limit", "what": "document"}) in details
    assert ("PURGED", {"what": "document", "reason": "dlq_dropped"}) in details
    assert json.dumps(details).count("Contrato") == 0
