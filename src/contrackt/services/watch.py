"""One watcher per API process follows the jobs of every open event stream.

Each tick (250 ms) reads the jobs of all subscriptions in one system-scope
query and wakes the subscribers whose job moved; every few seconds the same
transaction also asks which of the subscribers' API keys are still active, and
ends the streams of revoked ones.  Database work is therefore one short
transaction per tick whatever the number of open streams (one query per
``BATCH`` distinct jobs), and nothing at all while no stream is open.

Subscriptions are made only after the tenant-scoped lookup of the job (a
caller never subscribes to another tenant's job); the watcher checks the
tenant of every row it hands out all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from contrackt.domain.jobs import Job
from contrackt.ports.repositories import UnitOfWorkFactory

log = structlog.get_logger("contrackt.watch")

TICK_SECONDS = 0.25
KEY_CHECK_SECONDS = 2.0
BATCH = 1000  # job ids in one IN (...) list: far under SQLite's and PostgreSQL's parameter limits


def _progress(job: Job) -> tuple[object, ...]:
    return (job.status, job.pages_done, job.pages_total, job.error_code, job.completed_at)


class Subscription:
    """One stream's view of its job: the latest row, and why it must end (if it must)."""

    def __init__(self, job: Job, api_key_id: str) -> None:
        self.job = job
        self.tenant_id = job.tenant_id
        self.job_id = job.id
        self.api_key_id = api_key_id
        self.ended: str | None = None  # a problem code ("unauthorized") once the stream must stop
        self._changed = asyncio.Event()

    async def next(self, timeout: float) -> Job:
        """The job once it moved (or ``timeout`` passed, or the stream must end)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()
        return self.job

    def deliver(self, job: Job) -> None:
        if _progress(job) != _progress(self.job):
            self.job = job
            self._changed.set()

    def end(self, code: str) -> None:
        self.ended = code
        self._changed.set()


class JobWatcher:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        tick_s: float = TICK_SECONDS,
        key_check_s: float = KEY_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uow = uow
        self.tick_s = tick_s
        self.key_check_s = key_check_s
        self._clock = clock
        self._subs: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keys_checked_at = clock()

    def subscribe(self, job: Job, api_key_id: str) -> Subscription:
        sub = Subscription(job, api_key_id)
        self._subs.add(sub)
        self._wake.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="contrackt-job-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if not self._subs:
                self._wake.clear()
                await self._wake.wait()  # idle: no stream, no query
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except Exception:
                # A database hiccup must not end every stream: the next tick tries again.
                log.exception("watch.tick_failed")

    async def tick(self) -> None:
        """One round: read the subscribed jobs (and, when due, the keys) in one transaction."""
        subs = list(self._subs)
        if not subs:
            return
        now = self._clock()
        check_keys = now - self._keys_checked_at >= self.key_check_s
        job_ids = sorted({s.job_id for s in subs})
        jobs: dict[str, Job] = {}
        active: set[str] | None = None
        async with self.uow(system=True) as uow:
            for i in range(0, len(job_ids), BATCH):
                for row in await uow.jobs.get_many(job_ids[i : i + BATCH]):
                    jobs[row.id] = row
            if check_keys:
                active = await uow.api_keys.active_ids(sorted({s.api_key_id for s in subs}))
        if check_keys:
            self._keys_checked_at = now
        for sub in subs:
            if active is not None and sub.api_key_id not in active:
                sub.end("unauthorized")
                continue
            job = jobs.get(sub.job_id)
            if job is not None and job.tenant_id == sub.tenant_id:
                sub.deliver(job)
