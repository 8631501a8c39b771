"""JobQueue contract: every adapter (memory, Redis Streams, Kafka) behaves the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from contrackt.adapters.queue.memory import MemoryQueue
from contrackt.adapters.queue.redis_streams import RedisStreamsQueue
from contrackt.domain.jobs import JobMessage
from contrackt.ports.queue import Delivery, JobQueue
from tests.contract.services import drop_redis_queue, service, unique

Factory = Callable[[], JobQueue]


class Backend:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.made: list[JobQueue] = []
        self.cleanup: list[Any] = []
        if kind == "redis":
            self.url = f"{service('REDIS')}/0/{unique('ctk-test-jobs-')}"
        elif kind == "kafka":
            # A group of its own: on a broker shared with other test runs, one group across
            # topics would make every run's consumers rebalance together.
            topic = unique("ctk-test-jobs-")
            self.url = f"kafka://{service('KAFKA')}/{topic}?partitions=2&group={topic}"
        self._memory: MemoryQueue | None = None

    def new(self) -> JobQueue:
        """A queue client on the same stream/topic (a new process, for restart tests)."""
        q: JobQueue
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryQueue()
            q = self._memory
        elif self.kind == "redis":
            from contrackt.adapters.queue.redis_streams import RedisStreamsQueue

            q = RedisStreamsQueue.from_url(self.url, claim_idle_s=1.0)
        else:
            from contrackt.adapters.queue.kafka import KafkaQueue

            q = KafkaQueue.from_url(self.url, session_timeout_ms=6000)
        self.made.append(q)
        return q

    async def dead_letters(self, q: JobQueue) -> list[tuple[JobMessage, str]]:
        if isinstance(q, MemoryQueue):
            return q.dead_letters
        if self.kind == "redis":
            return await q.dead_letters()  # type: ignore[attr-defined, no-any-return]
        return await _kafka_dead(self.url)

    async def close(self) -> None:
        for q in self.made:
            await q.close()
        if self.kind == "redis":
            await drop_redis_queue(service("REDIS"), self.url.rsplit("/", 1)[1])


async def _kafka_dead(url: str) -> list[tuple[JobMessage, str]]:
    import json
    from urllib.parse import urlparse

    from aiokafka import AIOKafkaConsumer

    parts = urlparse(url)
    consumer = AIOKafkaConsumer(
        f"{parts.path.strip('/')}.dead",
        bootstrap_servers=parts.netloc,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        out = []
        batch = await consumer.getmany(timeout_ms=3000)
        for records in batch.values():
            for r in records:
                body = json.loads(r.value)
                out.append((JobMessage.from_dict(body["job"]), body.get("reason", "")))
        return out
    finally:
        await consumer.stop()


@pytest.fixture(params=["memory", "redis", "kafka"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    b = Backend(request.param)
    try:
        yield b
    finally:
        await b.close()


def msg(n: int = 1, tenant: str = "t-1") -> JobMessage:
    return JobMessage(job_id=f"job-{n}", tenant_id=tenant, blob_key=f"{tenant}/job-{n}.enc")


async def receive(q: JobQueue, timeout: float = 15.0) -> Delivery:
    d = await q.receive("consumer-a", timeout)
    assert d is not None, "no message within the timeout"
    return d


async def test_publish_receive_ack(backend: Backend) -> None:
    q = backend.new()
    await q.publish(msg(1))
    d = await receive(q)
    assert d.message == msg(1)
    assert d.deliveries == 1
    assert await q.depth() >= 1  # in flight counts
    await d.ack()
    assert await q.receive("consumer-a", 0.5) is None
    assert await q.depth() == 0


async def test_receive_times_out_empty(backend: Backend) -> None:
    q = backend.new()
    assert await q.receive("consumer-a", 0.3) is None


async def test_retry_redelivers_with_deliveries_plus_one(backend: Backend) -> None:
    q = backend.new()
    await q.publish(msg(2))
    d = await receive(q)
    await d.retry(0.3)
    assert await q.depth() >= 1  # a delayed retry is still work waiting
    again = await receive(q)
    assert again.message == msg(2)
    assert again.deliveries == 2
    await again.retry(0.0)
    third = await receive(q)
    assert third.deliveries == 3
    await third.ack()
    assert await q.depth() == 0


async def test_dead_letter(backend: Backend) -> None:
    q = backend.new()
    await q.publish(msg(3))
    d = await receive(q)
    await d.dead_letter("internal_error")
    assert await q.receive("consumer-a", 0.5) is None
    assert await q.depth() == 0
    dead = await backend.dead_letters(q)
    assert (msg(3), "internal_error") in dead


async def test_depth_counts_waiting(backend: Backend) -> None:
    q = backend.new()
    for n in range(5):
        await q.publish(msg(n, tenant=f"t-{n % 2}"))
    assert await q.depth() == 5
    got = []
    for _ in range(5):
        d = await receive(q)
        got.append(d.message.job_id)
        await d.ack()
    assert sorted(got) == [f"job-{n}" for n in range(5)]
    assert await q.depth() == 0


async def test_stats_tell_depth_dead_letters_and_how_long_the_oldest_waits(backend: Backend) -> None:
    q = backend.new()
    if isinstance(q, RedisStreamsQueue):
        q.age_ttl_s = 0.0  # read the age at every call here (the fleet-shared reading has its own test)
    empty = await q.stats()
    assert (empty.depth, empty.dead_letters, empty.oldest_age_s) == (0, 0, 0.0)
    await q.publish(msg(1, tenant="t-a"))
    await q.publish(msg(2, tenant="t-b"))
    await asyncio.sleep(1.2)
    waiting = await q.stats()
    assert waiting.depth == 2 and waiting.dead_letters == 0
    assert waiting.oldest_age_s is not None and 1.0 <= waiting.oldest_age_s < 30
    first = await receive(q)
    await first.dead_letter("internal_error")
    parked = await q.stats()
    assert (parked.depth, parked.dead_letters) == (1, 1)
    assert parked.oldest_age_s is not None and parked.oldest_age_s >= 1.0  # the other one still waits
    second = await receive(q)
    await second.ack()
    done = await q.stats()
    assert (done.depth, done.dead_letters, done.oldest_age_s) == (0, 1, 0.0)


async def test_redis_processes_share_one_reading_of_the_oldest_age() -> None:
    backend = Backend("redis")
    try:
        first, second = backend.new(), backend.new()
        assert isinstance(first, RedisStreamsQueue) and isinstance(second, RedisStreamsQueue)
        first.age_ttl_s = second.age_ttl_s = 1.0
        await first.publish(msg(1))
        # nobody has read the age yet: unknown for now, and this process reads it in the background
        assert (await first.stats()).oldest_age_s is None
        await asyncio.sleep(0.3)
        shared = await second.stats()
        assert shared.depth == 1  # depth and dead letters are read live...
        assert shared.oldest_age_s == pytest.approx(0.0, abs=0.25)  # ...the age is the shared reading
        await asyncio.sleep(0.9)  # the window passed: the next process to ask reads it anew
        assert (await second.stats()).oldest_age_s == pytest.approx(0.0, abs=0.25)  # the old one meanwhile
        await asyncio.sleep(0.3)
        assert (await first.stats()).oldest_age_s == pytest.approx(1.2, abs=0.3)
    finally:
        await backend.close()


@pytest.fixture(params=["redis", "kafka"])
async def durable(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    b = Backend(request.param)
    try:
        yield b
    finally:
        await b.close()


async def test_unacked_message_is_redelivered(durable: Backend) -> None:
    """A consumer that dies without ack: Redis claims the entry after claim_idle_s;
    Kafka hands it out again once the consumer group has a new member."""
    first = durable.new()
    await first.publish(msg(7))
    d = await receive(first)
    assert d.message == msg(7)
    if durable.kind == "kafka":
        await first.close()  # the process "dies" without committing
        await asyncio.sleep(0)
    second = durable.new()
    again = await second.receive("consumer-b", 30.0)
    assert again is not None and again.message == msg(7)
    assert again.deliveries >= 1
    if durable.kind == "redis":
        assert again.deliveries == 2  # counted by the stream's pending entry list
    await again.ack()
    assert await second.depth() == 0


# ----------------------------------------------------------------------------- fair share


async def buffered(backend: Backend, q: JobQueue, n: int) -> None:
    """Kafka reads ahead in the background: wait until the ``n`` records published are in its
    lanes, so the order of receives below depends on the fairness policy, not on fetch timing."""
    if backend.kind != "kafka":
        return
    from contrackt.adapters.queue.kafka import KafkaQueue

    assert isinstance(q, KafkaQueue)
    deadline = asyncio.get_running_loop().time() + 30
    while len(q._lanes) < n:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(q._lanes)} of {n} records read ahead"
        await asyncio.sleep(0.1)


async def warm(q: JobQueue) -> None:
    """Start the consumer (Kafka: join the group) before the test publishes."""
    assert await q.receive("consumer-a", 0.2) is None


async def test_a_late_tenant_is_not_stuck_behind_a_backlog(backend: Backend) -> None:
    q = backend.new()
    await warm(q)
    for n in range(50):
        await q.publish(msg(n, tenant="tenant-a"))
    await q.publish(msg(999, tenant="tenant-b"))
    await buffered(backend, q, 51)
    order = []
    for _ in range(3):
        d = await receive(q)
        order.append(d.message.tenant_id)
        await d.ack()
    assert "tenant-b" in order[:2], order
    assert await q.depth() == 48


async def test_a_newcomer_is_served_before_the_tenant_being_served(backend: Backend) -> None:
    q = backend.new()
    await warm(q)
    for n in range(5):
        await q.publish(msg(n, tenant="tenant-a"))
    await buffered(backend, q, 5)
    first = await receive(q)
    assert first.message.tenant_id == "tenant-a"
    await q.publish(msg(99, tenant="tenant-b"))  # B arrives while A is being served
    await buffered(backend, q, 5)
    nxt = await receive(q)
    assert nxt.message == msg(99, tenant="tenant-b")
    for d in (first, nxt):
        await d.ack()


async def test_receive_can_skip_tenants(backend: Backend) -> None:
    """A worker's spare consumer skips the tenants the worker is already busy with."""
    q = backend.new()
    await warm(q)
    for n in range(3):
        await q.publish(msg(n, tenant="tenant-a"))
    await q.publish(msg(9, tenant="tenant-b"))
    await buffered(backend, q, 4)
    d = await q.receive("spare", 10.0, skip_tenants=["tenant-a"])
    assert d is not None and d.message == msg(9, tenant="tenant-b")
    await d.ack()
    assert await q.receive("spare", 0.3, skip_tenants=["tenant-a"]) is None
    d = await receive(q)
    assert d.message == msg(0, tenant="tenant-a")
    await d.ack()
    assert await q.depth() == 2


async def test_round_robin_across_three_tenants(backend: Backend) -> None:
    q = backend.new()
    await warm(q)
    tenants = ["tenant-a", "tenant-b", "tenant-c"]
    for t, tenant in enumerate(tenants):
        for n in range(6):
            await q.publish(msg(t * 100 + n, tenant=tenant))
    await buffered(backend, q, 18)
    got = []
    for _ in range(12):
        d = await receive(q)
        got.append(d.message)
        await d.ack()
    for i in range(0, 12, 3):
        assert sorted(m.tenant_id for m in got[i : i + 3]) == tenants, [m.tenant_id for m in got]
    # Each tenant's own messages keep their order.
    for t, tenant in enumerate(tenants):
        assert [m.job_id for m in got if m.tenant_id == tenant] == [f"job-{t * 100 + n}" for n in range(4)]


async def test_defer_is_not_a_delivery_and_can_hold_the_tenant(backend: Backend) -> None:
    q = backend.new()
    await warm(q)
    for n, tenant in enumerate(["tenant-a", "tenant-a", "tenant-b", "tenant-b"]):
        await q.publish(msg(n, tenant=tenant))
    await buffered(backend, q, 4)
    first = await receive(q)
    held = first.message.tenant_id
    # That tenant is at its in-flight cap: hold its lane for 3 s.
    await first.defer(3.0, hold_tenant=True)
    assert await q.depth() == 4
    others = []
    while (d := await q.receive("consumer-a", 0.5)) is not None:
        others.append(d.message.tenant_id)
        await d.ack()
    assert len(others) == 2 and held not in others, "a held tenant's messages wait; the others do not"
    back = [await receive(q, 20.0), await receive(q, 20.0)]
    assert {d.message.tenant_id for d in back} == {held}
    assert first.message in [d.message for d in back]
    assert [d.deliveries for d in back] == [1, 1], "deferring is not a delivery"
    # Deferred without holding: only this message waits.
    await back[0].defer(0.3)
    await back[1].ack()
    again = await receive(q)
    assert again.message == back[0].message
    assert again.deliveries == 1
    await again.ack()
    assert await q.depth() == 0


async def test_touch_keeps_a_message_from_other_consumers() -> None:
    """Redis Streams hands an entry idle for claim_idle_s to another consumer (its worker is
    presumed dead). While its worker touches it (every heartbeat), nobody else gets it; once
    the touches stop it is claimed, and from then on it is the new consumer's alone.

    (In memory nobody else can take a message; in Kafka its partition's consumer keeps it
    while that process lives: touch is a no-op there.)"""
    backend = Backend("redis")
    try:
        first = backend.new()
        await first.publish(msg(8))
        d = await receive(first)
        second = backend.new()
        loop = asyncio.get_running_loop()
        until = loop.time() + 3.0  # three times claim_idle_s in these tests
        while loop.time() < until:
            await d.touch()
            assert await second.receive("consumer-b", 0.3) is None
        again = await second.receive("consumer-b", 10.0)
        assert again is not None and again.message == msg(8)
        assert again.deliveries == 2
        await d.touch()  # the first worker wakes up: it cannot take the entry back
        await d.ack()  # nor delete it
        assert await second.depth() == 1
        await again.ack()
        assert await second.depth() == 0
    finally:
        await backend.close()
