"""The shared job watcher behind event streams: a constant number of queries per tick,
updates fanned out, revoked keys' streams ended, nothing handed across tenants."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import event

from contrackt.bootstrap import Container
from contrackt.domain.tenants import Principal
from contrackt.services.watch import JobWatcher
from tests.fakes import fake_pdf


@contextmanager
def counting_statements(c: Container) -> Iterator[list[str]]:
    """Every SQL statement the container's engine runs while the block is open."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = c.uow.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def new_caller(c: Container, name: str) -> Principal:
    key = await c.tenants.create(name)
    return Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)


async def submit(c: Container, caller: Principal, n: int) -> list[str]:
    return [(await c.intake.submit(caller, fake_pdf(f"doc {i}"))).job.id for i in range(n)]


async def test_one_query_per_tick_whatever_the_number_of_streams(container: Container) -> None:
    c = container
    a, b = await new_caller(c, "a"), await new_caller(c, "b")
    jobs = await submit(c, a, 20) + await submit(c, b, 20)
    watcher = JobWatcher(c.uow, key_check_s=3600)  # keys not due: job reads only

    async def statements_per_tick(streams: int) -> int:
        for sub in list(watcher._subs):
            watcher.unsubscribe(sub)
        for i in range(streams):
            caller = a if i % 2 == 0 else b
            own = [j for j in jobs if (j in jobs[:20]) == (caller is a)]
            job = await c.reader.job(caller, own[i % len(own)])
            watcher.subscribe(job, caller.api_key_id)
        with counting_statements(c) as seen:
            await watcher.tick()
        return sum(s.lstrip().upper().startswith("SELECT") for s in seen)  # (BEGIN/COMMIT aside)

    one, forty = await statements_per_tick(1), await statements_per_tick(40)
    print(f"\nqueries per tick: 1 stream {one}, 40 streams {forty}")
    assert one == forty == 1
    watcher.key_check_s = 0  # keys due: one more statement, still independent of the streams
    assert await statements_per_tick(40) == 2
    assert await statements_per_tick(3) == 2


async def test_idle_watcher_runs_no_query(container: Container) -> None:
    watcher = JobWatcher(container.uow, tick_s=0.01)
    await watcher.start()
    try:
        with counting_statements(container) as seen:
            await asyncio.sleep(0.3)
        assert seen == []
    finally:
        await watcher.stop()


async def test_subscribers_are_woken_when_their_job_moves(container: Container) -> None:
    c = container
    caller = await new_caller(c, "a")
    job_id, other_id = await submit(c, caller, 2)
    watcher = JobWatcher(c.uow, tick_s=0.02)
    sub = watcher.subscribe(await c.reader.job(caller, job_id), caller.api_key_id)
    quiet = watcher.subscribe(await c.reader.job(caller, other_id), caller.api_key_id)
    await watcher.start()
    try:
        async with c.uow(caller.tenant_id) as uow:
            await uow.jobs.set_progress(job_id, 0, 3)  # pending: the update does not apply
        now = c.clock.now()
        async with c.uow(caller.tenant_id) as uow:
            assert await uow.jobs.claim(job_id, now, now) is not None
            await uow.jobs.set_progress(job_id, 2, 3)
        moved = await asyncio.wait_for(sub.next(5.0), 5.0)
        assert (moved.status.value, moved.pages_done, moved.pages_total) == ("processing", 2, 3)
        assert (await quiet.next(0.1)).status.value == "pending"
        assert quiet.ended is None
    finally:
        await watcher.stop()


async def test_a_revoked_keys_streams_end(container: Container) -> None:
    c = container
    caller = await new_caller(c, "a")
    second = await c.tenants.create_key(caller.tenant_id)
    (job_id,) = await submit(c, caller, 1)
    job = await c.reader.job(caller, job_id)
    watcher = JobWatcher(c.uow, tick_s=0.02, key_check_s=0.1)
    doomed = [watcher.subscribe(job, second.key_id) for _ in range(3)]
    kept = watcher.subscribe(job, caller.api_key_id)
    await watcher.start()
    try:
        await asyncio.sleep(0.3)
        assert all(s.ended is None for s in [*doomed, kept])
        assert await c.tenants.revoke_key(second.key_id)
        for s in doomed:
            await asyncio.wait_for(s.next(5.0), 5.0)
            assert s.ended == "unauthorized"
        assert kept.ended is None
    finally:
        await watcher.stop()


async def test_never_hands_a_job_to_another_tenant(container: Container) -> None:
    c = container
    a, b = await new_caller(c, "a"), await new_caller(c, "b")
    (job_id,) = await submit(c, a, 1)
    job = await c.reader.job(a, job_id)
    watcher = JobWatcher(c.uow)
    # A subscription that (against the route's 404 check) names a's job as b's.
    forged = watcher.subscribe(replace(job, tenant_id=b.tenant_id, pages_total=99), b.api_key_id)
    now = c.clock.now()
    async with c.uow(a.tenant_id) as uow:
        assert await uow.jobs.claim(job_id, now, now) is not None
    await watcher.tick()
    assert forged.job.pages_total == 99  # nothing delivered
    assert forged.job.status.value == "pending"
