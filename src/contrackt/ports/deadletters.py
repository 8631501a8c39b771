"""Port: the dead-letter queue, as operators see it (`contrackt dlq`).

A message lands there when its job failed with a retryable code on its last attempt
(``Delivery.dead_letter``), or, on Kafka, when it arrived already delivered too often. The
entry says which job, why, after how many deliveries and when — never anything of the
document. The database still decides what a replay or a drop may do (services/deadletters.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from contrackt.domain.jobs import JobMessage


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str  # the queue's own id of the entry (stream id, partition-offset, ...)
    message: JobMessage
    reason: str  # the job's error code (or the queue's reason, e.g. max_deliveries)
    deliveries: int
    dead_at: datetime | None


class DeadLetterQueue(Protocol):
    async def list(self, limit: int = 1000) -> list[DeadLetter]:
        """Entries still there, oldest first (at most ``limit``)."""
        ...

    async def get(self, entry_id: str) -> DeadLetter | None:
        """The entry, or None when unknown or already removed (also for a malformed id)."""
        ...

    async def remove(self, entry_id: str, outcome: str) -> bool:
        """Take the entry off the queue (``outcome``: why, e.g. replayed or dropped);
        True if it was there."""
        ...

    async def close(self) -> None: ...
