"""Outbox relay: publish committed jobs to the queue (at-least-once)."""

from __future__ import annotations

from contrackt.ports.clock import Clock
from contrackt.ports.queue import JobQueue
from contrackt.ports.repositories import UnitOfWorkFactory


async def relay_outbox(uow: UnitOfWorkFactory, queue: JobQueue, clock: Clock, batch: int = 100) -> int:
    """Publish up to ``batch`` unsent outbox rows; the number published.

    Publish happens before the rows are marked sent, inside one transaction: a
    crash in between publishes twice, which the conditional claim makes harmless.
    """
    async with uow(system=True) as u:
        rows = await u.outbox.take(batch)
        for _, message in rows:
            await queue.publish(message)
        await u.outbox.mark_sent([row_id for row_id, _ in rows], clock.now())
    return len(rows)
