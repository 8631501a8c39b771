"""DELETE racing the worker: every interleaving leaves no result, and the receipt tells the truth.

Embedded backends (SQLite, the SQL result table, encrypted local files); the same driver
runs over PostgreSQL + Redis in tests/integration/test_delete_race_pg.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from contrackt.bootstrap import Container
from contrackt.domain.jobs import JobMessage, JobStatus
from contrackt.ports.extractor import ExtractOptions
from contrackt.services.processing import ProcessingService
from contrackt.services.results import ResultService
from tests.fakes import FakeExtractor, fake_pdf
from tests.interleave import (
    FakeDelivery,
    QuietExtractor,
    ScheduledBlobs,
    ScheduledResults,
    ScheduledUow,
    Scheduler,
    World,
    check_evidence,
    explore,
    run_interleaving,
)


async def world_of(c: Container) -> World:
    return World(
        uow=c.uow,
        results=c.results,
        blobs=c.blobs,
        keyring=c.keyring,
        clock=c.clock,
        signer=c.signer,
        extractor=QuietExtractor(FakeExtractor()),
        tenants=c.tenants,
        public_key=await c.signer.public_key_raw(),
    )


async def explore_delete_during_processing(world: World) -> tuple[int, Counter[tuple[str, tuple[str, ...]]]]:
    """Every order of the worker's and DELETE's operations; how many, and how each ended."""
    pdf = fake_pdf("Contrato de locação")
    endings: Counter[tuple[str, tuple[str, ...]]] = Counter()
    traces: set[tuple[str, ...]] = set()

    async def run(prefix: str) -> Scheduler:
        outcome = await run_interleaving(world, prefix, pdf)
        traces.add(tuple(outcome.sched.trace))
        endings[(outcome.status.value, tuple(outcome.destroyed))] += 1
        return outcome.sched

    runs = await explore(run)
    assert runs == len(traces)  # each run was a different order
    return runs, endings


@pytest.mark.slow  # about 400 runs of intake + worker + DELETE + checks: half a minute
async def test_every_interleaving_of_delete_and_processing(container: Container) -> None:
    world = await world_of(container)
    started = time.monotonic()
    runs, endings = await explore_delete_during_processing(world)
    print(f"{runs} orders in {time.monotonic() - started:.1f}s: {dict(endings)}")
    # The worker alone takes 7 operations and DELETE 6: hundreds of distinct orders.
    assert runs > 300
    # Both endings happen, and nothing else: completed (both copies destroyed) or cancelled.
    assert set(endings) == {("completed", ("document", "result")), ("failed", ("document",))}


async def test_a_late_claim_deletes_the_result_it_stored_after_delete(container: Container) -> None:
    """A worker whose claim ran out (L) passes its claim check, the sweeper releases the job (S),
    another worker completes it (W), the client deletes it (D), and only then does L store its
    result: L's finish does not move the job, so L deletes the copy it stored."""
    world = await world_of(container)
    c = container
    principal = await world.new_principal()
    job = (await c.intake.submit(principal, fake_pdf("Aditivo contratual"))).job
    assert job.blob_key is not None
    now = c.clock.now()
    async with c.uow(job.tenant_id) as u:
        late_claim = await u.jobs.claim(job.id, now, now)  # attempt 1; its lease is already over
    assert late_claim is not None
    result = await world.extractor.extract(fake_pdf("Aditivo contratual"), ExtractOptions())
    sched = Scheduler("LSWD", "L" + "S" + "W" * 20 + "D" * 20 + "L" * 20)
    uow = ScheduledUow(c.uow, sched)
    results = ScheduledResults(c.results, sched)
    blobs = ScheduledBlobs(c.blobs, sched)

    def worker() -> ProcessingService:
        return ProcessingService(
            uow, blobs, results, c.keyring, world.extractor, c.clock, lease_seconds=300, result_ttl_seconds=900
        )

    async def sweeper_releases() -> None:
        async with uow(job.tenant_id) as u:
            assert await u.jobs.release(job.id, late_claim.attempts)

    reader = ResultService(uow, results, blobs, c.keyring, c.clock)
    message = JobMessage(job.id, job.tenant_id, job.blob_key)
    await asyncio.gather(
        sched.run("L", worker()._complete(FakeDelivery(message), late_claim, result, 0.1)),
        sched.run("S", sweeper_releases()),
        sched.run("W", worker().handle(FakeDelivery(message))),
        sched.run("D", reader.purge(principal, job.id)),
    )
    trace = sched.trace
    assert trace[:2] == ["L:tx(_complete)", "S:tx(sweeper_releases)"]
    assert trace[-3:] == ["L:result.put", "L:tx(_complete)", "L:result.delete"], trace
    outcome = await check_evidence(world, principal, job, sched)
    assert (outcome.status, outcome.destroyed) == (JobStatus.COMPLETED, ["document", "result"])
