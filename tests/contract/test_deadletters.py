"""DeadLetterQueue contract: memory, Redis Streams and Kafka list, find and remove dead letters alike.

Every Redis test uses a stream of its own and every Kafka test a topic and a consumer group of
its own (tests/contract/test_queue.py's Backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from contrackt.adapters.queue.dead_memory import MemoryDeadLetters
from contrackt.adapters.queue.memory import MemoryQueue
from contrackt.ports.deadletters import DeadLetterQueue
from contrackt.ports.queue import JobQueue
from tests.contract.test_queue import Backend, msg, receive


def dead_letters(backend: Backend, q: JobQueue) -> DeadLetterQueue:
    if isinstance(q, MemoryQueue):
        return MemoryDeadLetters(q)
    if backend.kind == "redis":
        from contrackt.adapters.queue.dead_redis import RedisDeadLetters
        from contrackt.adapters.queue.redis_streams import RedisStreamsQueue

        assert isinstance(q, RedisStreamsQueue)
        return RedisDeadLetters.for_queue(q)
    from contrackt.adapters.queue.dead_kafka import KafkaDeadLetters
    from contrackt.adapters.queue.kafka import KafkaQueue

    assert isinstance(q, KafkaQueue)
    dead = KafkaDeadLetters.for_queue(q)
    backend.cleanup.append(dead)
    return dead


@pytest.fixture(params=["memory", "redis", "kafka"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    b = Backend(request.param)
    try:
        yield b
    finally:
        for dead in b.cleanup:
            await dead.close()
        await b.close()


async def kill(q: JobQueue, n: int, reason: str, *, retries: int = 0) -> None:
    """Publish job ``n``, have it delivered ``retries + 1`` times, and dead-letter it."""
    await q.publish(msg(n))
    d = await receive(q)
    for _ in range(retries):
        await d.retry(0.0)
        d = await receive(q)
    await d.dead_letter(reason)


async def test_a_dead_letter_is_listed_found_and_removed_once(backend: Backend) -> None:
    q = backend.new()
    dead = dead_letters(backend, q)
    assert await dead.list() == []
    before = datetime.now(UTC) - timedelta(seconds=5)
    await kill(q, 1, "timeout", retries=2)
    [entry] = await dead.list()
    assert (entry.message, entry.reason, entry.deliveries) == (msg(1), "timeout", 3)
    assert entry.dead_at is not None and before <= entry.dead_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert await dead.get(entry.entry_id) == entry
    assert await dead.remove(entry.entry_id, "dropped") is True
    assert await dead.list() == []
    assert await dead.get(entry.entry_id) is None
    assert await dead.remove(entry.entry_id, "dropped") is False


async def test_unknown_and_malformed_ids_are_not_found(backend: Backend) -> None:
    q = backend.new()
    dead = dead_letters(backend, q)
    await kill(q, 2, "resource_limit")
    for ident in ("nope", "7-123456", "999999-7", "", "4ce5b59c-a7b4-4f8a-9a3c-6f1f0d7e9a10"):
        assert await dead.get(ident) is None, ident
        assert await dead.remove(ident, "dropped") is False, ident
    assert len(await dead.list()) == 1


async def test_oldest_first_with_a_limit_and_seen_by_another_client(backend: Backend) -> None:
    q = backend.new()
    dead = dead_letters(backend, q)
    await kill(q, 3, "timeout")
    await kill(q, 4, "internal_error")
    assert [e.message.job_id for e in await dead.list()] == ["job-3", "job-4"]
    assert [e.message.job_id for e in await dead.list(limit=1)] == ["job-3"]
    other = dead_letters(backend, backend.new())  # another process (the operator's CLI)
    first = (await other.list())[0]
    assert await other.remove(first.entry_id, "replayed")
    assert [e.message.job_id for e in await dead.list()] == ["job-4"]


async def test_the_queues_dead_letter_gauge_follows_drops(backend: Backend) -> None:
    """/metrics' `contrackt_queue_dead_letters` (QueueStats.dead_letters) must fall when an
    operator drops an entry, or the DLQ alert would fire forever (Kafka cannot delete records)."""
    q = backend.new()
    dead = dead_letters(backend, q)
    await kill(q, 5, "timeout")
    await kill(q, 6, "timeout")
    assert (await q.stats()).dead_letters == 2
    first = (await dead.list())[0]
    assert await dead.remove(first.entry_id, "dropped")
    assert (await q.stats()).dead_letters == 1
