"""Dead letters of the in-process queue (embedded mode and tests): the queue's own list."""

from __future__ import annotations

from contrackt.adapters.queue.memory import MemoryQueue
from contrackt.ports.deadletters import DeadLetter


class MemoryDeadLetters:
    def __init__(self, queue: MemoryQueue) -> None:
        self.queue = queue

    async def list(self, limit: int = 1000) -> list[DeadLetter]:
        return list(self.queue.dead.values())[: max(0, limit)]

    async def get(self, entry_id: str) -> DeadLetter | None:
        return self.queue.dead.get(entry_id)

    async def remove(self, entry_id: str, outcome: str) -> bool:
        return self.queue.dead.pop(entry_id, None) is not None

    async def close(self) -> None:
        return None
