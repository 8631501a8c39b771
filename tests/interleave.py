"""Deterministic interleavings of a worker finishing a job and a client deleting it.

Two actors run as asyncio tasks: ``W`` (``ProcessingService.handle``: claim, read the
document, extract, store the result, finish, destroy the document) and ``D``
(``ResultService.purge``: DELETE /v1/jobs/{id}). Every operation on shared state (each
database transaction, each result-store and blob-store call) goes through a wrapper that
first asks the ``Scheduler`` for its turn; a schedule such as ``"WWDWD…"`` says whose turn
each next operation is, and an operation runs to its end before the next one starts. All
distinct orders are driven (``explore``), so every order of the two actors' operations
is run once, on the real services and backends.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from contrackt.domain.errors import Gone, JobFailed
from contrackt.domain.jobs import Job, JobMessage, JobStatus
from contrackt.domain.results import ExtractionResult
from contrackt.domain.tenants import Principal
from contrackt.ports.blobstore import BlobInfo, BlobStore
from contrackt.ports.clock import Clock
from contrackt.ports.extractor import DocumentInfo, ExtractOptions, Extractor, ProgressCallback
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.ports.results import ResultStore
from contrackt.ports.signer import ReceiptSigner
from contrackt.services.intake import IntakeService
from contrackt.services.keyring import Keyring
from contrackt.services.processing import ProcessingService
from contrackt.services.receipts import ReceiptService, verify_receipt
from contrackt.services.results import ResultService
from contrackt.services.tenants import TenantService

ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("actor", default=None)


class Scheduler:
    """Hands out turns: one operation at a time, the next one going to the actor the schedule names.

    A turn is decided only when every actor that has not finished is parked at its next
    operation, so a run is a function of its decisions. An actor named by the schedule that
    has finished is skipped; past the schedule the first parked actor (by name) goes.
    ``decisions`` records, for each turn, who went and who could have gone.
    """

    def __init__(self, actors: str, schedule: str = "") -> None:
        self.actors = frozenset(actors)
        self.schedule = schedule
        self.i = 0
        self.holder: str | None = None
        self.grant: str | None = None
        self.parked: set[str] = set()
        self.finished: set[str] = set()
        self.cond = asyncio.Condition()
        self.trace: list[str] = []
        self.decisions: list[tuple[str, frozenset[str]]] = []

    def _decide(self) -> None:
        if self.holder is not None or self.grant is not None or not self.parked:
            return
        if self.parked | self.finished != self.actors:
            return  # somebody is still on its way to its next operation
        while self.i < len(self.schedule) and self.schedule[self.i] in self.finished:
            self.i += 1
        if self.i < len(self.schedule):
            pick = self.schedule[self.i]
            self.i += 1
            if pick not in self.parked:
                raise AssertionError(f"schedule {self.schedule!r} names {pick} at turn {len(self.decisions)}")
        else:
            pick = min(self.parked)
        self.grant = pick
        self.decisions.append((pick, frozenset(self.parked)))

    def _granted(self, actor: str) -> bool:
        self._decide()
        if self.grant != actor:
            return False
        self.grant, self.holder = None, actor
        self.parked.discard(actor)
        return True

    async def step(self, label: str) -> None:
        actor = ACTOR.get()
        if actor is None:  # set-up and checks run outside the schedule
            return
        async with self.cond:
            if self.holder == actor:  # the actor's previous operation is over
                self.holder = None
            self.parked.add(actor)
            self.cond.notify_all()
            await self.cond.wait_for(lambda: self._granted(actor))
            self.trace.append(f"{actor}:{label}")

    async def done(self, actor: str) -> None:
        async with self.cond:
            self.finished.add(actor)
            if self.holder == actor:
                self.holder = None
            self.cond.notify_all()

    async def run(self, actor: str, coro: Any) -> None:
        ACTOR.set(actor)
        try:
            await coro
        finally:
            await self.done(actor)


async def explore(run: Callable[[str], Awaitable[Scheduler]]) -> int:
    """Run every distinct order of operations once (depth-first over the decisions of each run).

    ``run(prefix)`` drives one run whose first decisions follow ``prefix``; after a run, every
    turn where another actor could have gone instead becomes a new prefix. Returns the number
    of runs, i.e. of distinct orders.
    """
    stack = [""]
    runs = 0
    while stack:
        prefix = stack.pop()
        sched = await run(prefix)
        runs += 1
        taken = [chosen for chosen, _ in sched.decisions]
        assert "".join(taken[: len(prefix)]) == prefix, (prefix, taken)
        for i in range(len(prefix), len(sched.decisions)):
            chosen, could = sched.decisions[i]
            stack.extend("".join(taken[:i]) + other for other in sorted(could - {chosen}))
    return runs


class _ScheduledTx:
    def __init__(self, inner: UnitOfWork, sched: Scheduler, label: str) -> None:
        self.inner, self.sched, self.label = inner, sched, label

    async def __aenter__(self) -> UnitOfWork:
        await self.sched.step(self.label)
        return await self.inner.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)


class ScheduledUow:
    """A unit-of-work factory whose transactions each take one turn (labelled by the caller)."""

    def __init__(self, inner: UnitOfWorkFactory, sched: Scheduler) -> None:
        self.inner, self.sched = inner, sched

    def __call__(self, tenant_id: str | None = None, *, system: bool = False) -> UnitOfWork:
        caller = sys._getframe(1).f_code.co_name
        return _ScheduledTx(self.inner(tenant_id, system=system), self.sched, f"tx({caller})")  # type: ignore[return-value]


class ScheduledResults:
    def __init__(self, inner: ResultStore, sched: Scheduler) -> None:
        self.inner, self.sched = inner, sched

    async def put(self, tenant_id: str, job_id: str, ciphertext: bytes, expires_at: datetime) -> None:
        await self.sched.step("result.put")
        await self.inner.put(tenant_id, job_id, ciphertext, expires_at)

    async def get(self, tenant_id: str, job_id: str) -> bytes | None:
        await self.sched.step("result.get")
        return await self.inner.get(tenant_id, job_id)

    async def delete(self, tenant_id: str, job_id: str) -> None:
        await self.sched.step("result.delete")
        await self.inner.delete(tenant_id, job_id)

    async def purge_expired(self, now: datetime) -> int:
        return await self.inner.purge_expired(now)

    async def close(self) -> None:
        return None


class ScheduledBlobs:
    def __init__(self, inner: BlobStore, sched: Scheduler) -> None:
        self.inner, self.sched = inner, sched

    async def put(self, key: str, data: bytes) -> None:
        await self.sched.step("blob.put")
        await self.inner.put(key, data)

    async def get(self, key: str) -> bytes:
        await self.sched.step("blob.get")
        return await self.inner.get(key)

    async def delete(self, key: str) -> None:
        await self.sched.step("blob.delete")
        await self.inner.delete(key)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        return await self.inner.list(prefix)

    async def close(self) -> None:
        return None


class QuietExtractor:
    """Wraps an extractor and reports no progress: one database write less per run to interleave."""

    def __init__(self, inner: Extractor) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    def engines(self) -> list[str]:
        return self.inner.engines()

    async def inspect(self, pdf: bytes) -> DocumentInfo:
        return await self.inner.inspect(pdf)

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        return await self.inner.extract(pdf, options, None)

    async def close(self) -> None:
        return None


@dataclass
class FakeDelivery:
    message: JobMessage
    deliveries: int = 1
    outcome: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.outcome.append("ack")

    async def retry(self, delay_s: float) -> None:
        self.outcome.append("retry")

    async def dead_letter(self, reason: str) -> None:
        self.outcome.append(f"dead_letter:{reason}")


@dataclass
class World:
    """The real backends under test (the scheduled wrappers go around them)."""

    uow: UnitOfWorkFactory
    results: ResultStore
    blobs: BlobStore
    keyring: Keyring
    clock: Clock
    signer: ReceiptSigner
    extractor: Extractor
    tenants: TenantService
    public_key: bytes

    async def new_principal(self) -> Principal:
        """A fresh tenant per run: its audit chain (read whole by receipts) stays short."""
        key = await self.tenants.create("acme")
        return Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)


@dataclass
class Outcome:
    sched: Scheduler
    status: JobStatus
    destroyed: list[str]


async def run_interleaving(world: World, schedule: str, pdf: bytes) -> Outcome:
    """Submit a document, race W (the worker) against D (DELETE) along ``schedule``, check the evidence."""
    principal = await world.new_principal()
    intake = IntakeService(world.uow, world.blobs, world.keyring, world.clock, ["rapidocr"], 10_000)
    job = (await intake.submit(principal, pdf)).job
    assert job.blob_key is not None
    sched = Scheduler("WD", schedule)
    uow = ScheduledUow(world.uow, sched)
    results = ScheduledResults(world.results, sched)
    blobs = ScheduledBlobs(world.blobs, sched)
    worker = ProcessingService(
        uow, blobs, results, world.keyring, world.extractor, world.clock, lease_seconds=300, result_ttl_seconds=900
    )
    reader = ResultService(uow, results, blobs, world.keyring, world.clock)
    delivery = FakeDelivery(JobMessage(job.id, job.tenant_id, job.blob_key))
    await asyncio.wait_for(
        asyncio.gather(
            sched.run("W", worker.handle(delivery)),
            sched.run("D", reader.purge(principal, job.id)),
        ),
        timeout=30,
    )
    return await check_evidence(world, principal, job, sched)


async def check_evidence(world: World, principal: Principal, job: Job, sched: Scheduler) -> Outcome:
    """What a client would see after DELETE: nothing stored, and a receipt that says exactly that."""
    where = " ".join(sched.trace)
    assert await world.results.get(job.tenant_id, job.id) is None, f"a result survived DELETE: {where}"
    assert job.blob_key is not None
    assert not await world.blobs.exists(job.blob_key), f"the document survived DELETE: {where}"
    async with world.uow(job.tenant_id) as u:
        final = await u.jobs.get(job.tenant_id, job.id)
        rows = [r.event for r in await u.audit.chain(job.tenant_id) if r.event.job_id == job.id]
    assert final is not None and final.status.terminal and final.purged_at is not None, where
    assert final.status is JobStatus.COMPLETED or final.error_code == "cancelled", (final.error_code, where)
    purged = [str(ev.details.get("what", "")).split("+") for ev in rows if ev.action == "PURGED"]
    named = [w for what in purged for w in what]
    completed = final.status is JobStatus.COMPLETED
    # Each copy is recorded destroyed exactly once, and a result only if the job ever had one.
    assert named.count("document") == 1, (purged, where)
    assert named.count("result") == (1 if completed else 0), (purged, where)
    receipt = await ReceiptService(world.uow, world.signer, world.clock, world.keyring).issue(principal, job.id)
    verify_receipt(receipt, world.public_key)
    assert receipt["destroyed"] == (["document", "result"] if completed else ["document"]), where
    reader = ResultService(world.uow, world.results, world.blobs, world.keyring, world.clock)
    try:
        await reader.result(principal, job.id)
    except (Gone, JobFailed) as exc:
        assert isinstance(exc, Gone if completed else JobFailed), where
    else:
        raise AssertionError(f"the result was readable after DELETE: {where}")
    return Outcome(sched, final.status, receipt["destroyed"])
