"""In-process queue (embedded mode). Not durable: the reconciler refills it from the database at boot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from contrackt.domain.jobs import JobMessage


@dataclass
class MemoryDelivery:
    message: JobMessage
    deliveries: int
    _queue: MemoryQueue = field(repr=False)

    async def ack(self) -> None:
        self._queue._inflight -= 1

    async def retry(self, delay_s: float) -> None:
        self._queue._inflight -= 1
        self._queue._delayed += 1

        async def later() -> None:
            await asyncio.sleep(delay_s)
            self._queue._delayed -= 1
            self._queue._put(self.message, self.deliveries)

        self._queue._tasks.add(task := asyncio.create_task(later()))
        task.add_done_callback(self._queue._tasks.discard)

    async def dead_letter(self, reason: str) -> None:
        self._queue._inflight -= 1
        self._queue.dead_letters.append((self.message, reason))


class MemoryQueue:
    def __init__(self) -> None:
        self._q: asyncio.Queue[tuple[JobMessage, int]] = asyncio.Queue()
        self._inflight = 0
        self._delayed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.dead_letters: list[tuple[JobMessage, str]] = []

    def _put(self, message: JobMessage, deliveries: int) -> None:
        self._q.put_nowait((message, deliveries))

    async def publish(self, message: JobMessage) -> None:
        self._put(message, 0)

    async def receive(self, consumer: str, timeout_s: float) -> MemoryDelivery | None:
        try:
            message, deliveries = await asyncio.wait_for(self._q.get(), timeout_s)
        except TimeoutError:
            return None
        self._inflight += 1
        return MemoryDelivery(message, deliveries + 1, self)

    async def depth(self) -> int:
        return self._q.qsize() + self._inflight + self._delayed

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
