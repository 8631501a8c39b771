"""In-process queue (embedded mode), fair across tenants (per-tenant lanes, round-robin).

Not durable: the reconciler refills it from the database at boot.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from contrackt.adapters.queue.lanes import TenantLanes
from contrackt.domain.jobs import JobMessage
from contrackt.ports.deadletters import DeadLetter
from contrackt.ports.queue import QueueStats


@dataclass
class MemoryDelivery:
    message: JobMessage
    deliveries: int
    _queue: MemoryQueue = field(repr=False)
    _done: bool = field(default=False, repr=False)

    def _settle(self) -> bool:
        if self._done:
            return False
        self._done = True
        self._queue._inflight -= 1
        return True

    async def ack(self) -> None:
        self._settle()

    async def retry(self, delay_s: float) -> None:
        if self._settle():
            self._queue._later(delay_s, self.message, self.deliveries)

    async def defer(self, delay_s: float, *, hold_tenant: bool = False) -> None:
        if not self._settle():
            return
        if hold_tenant:
            # Back at the head of its tenant's lane, which is skipped meanwhile.
            self._queue._lanes.push(
                self.message.tenant_id, (self.message, self.deliveries - 1, time.monotonic()), front=True
            )
            self._queue._lanes.hold(self.message.tenant_id, delay_s)
        else:
            self._queue._later(delay_s, self.message, self.deliveries - 1)

    async def touch(self) -> None:
        return None  # nobody else can take it: the queue lives and dies with this process

    async def dead_letter(self, reason: str) -> None:
        if self._settle():
            q = self._queue
            entry = DeadLetter(f"m-{next(q._dead_ids)}", self.message, reason[:200], self.deliveries, datetime.now(UTC))
            q.dead[entry.entry_id] = entry


class MemoryQueue:
    def __init__(self) -> None:
        # Each waiting message with the deliveries it already had and when it was (re-)enqueued.
        self._lanes: TenantLanes[tuple[JobMessage, int, float]] = TenantLanes()
        self._inflight = 0
        self._delayed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.dead: dict[str, DeadLetter] = {}  # the dead-letter queue, in arrival order
        self._dead_ids = itertools.count(1)

    @property
    def dead_letters(self) -> list[tuple[JobMessage, str]]:
        """The dead letters' messages and reasons (tests)."""
        return [(e.message, e.reason) for e in self.dead.values()]

    def _put(self, message: JobMessage, prior: int) -> None:
        self._lanes.push(message.tenant_id, (message, prior, time.monotonic()))

    def _later(self, delay_s: float, message: JobMessage, prior: int) -> None:
        self._delayed += 1

        async def later() -> None:
            try:
                await asyncio.sleep(max(0.0, delay_s))
            finally:
                self._delayed -= 1
            self._put(message, prior)

        self._tasks.add(task := asyncio.create_task(later()))
        task.add_done_callback(self._tasks.discard)

    async def publish(self, message: JobMessage) -> None:
        self._put(message, 0)

    async def receive(
        self, consumer: str, timeout_s: float, *, skip_tenants: Collection[str] = ()
    ) -> MemoryDelivery | None:
        item = await self._lanes.take(timeout_s, skip_tenants)
        if item is None:
            return None
        message, prior, _ = item
        self._inflight += 1
        return MemoryDelivery(message, prior + 1, self)

    async def depth(self) -> int:
        return len(self._lanes) + self._inflight + self._delayed

    async def stats(self) -> QueueStats:
        oldest = min((since for _, _, since in self._lanes.items()), default=None)
        age = 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)
        return QueueStats(await self.depth(), len(self.dead_letters), age)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
