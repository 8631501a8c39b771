"""Port: the job queue (at-least-once delivery; the database holds the truth)."""

from __future__ import annotations

from typing import Protocol

from contrackt.domain.jobs import JobMessage


class Delivery(Protocol):
    message: JobMessage
    deliveries: int  # how many times this message has been handed out, this one included

    async def ack(self) -> None:
        """Done: never deliver again. Call only after the outcome is committed."""
        ...

    async def retry(self, delay_s: float) -> None:
        """Hand the message out again after ``delay_s`` seconds."""
        ...

    async def dead_letter(self, reason: str) -> None:
        """Give up: park the message on the dead-letter queue and ack it."""
        ...


class JobQueue(Protocol):
    async def publish(self, message: JobMessage) -> None: ...

    async def receive(self, consumer: str, timeout_s: float) -> Delivery | None:
        """Next message for this consumer, or None after ``timeout_s``."""
        ...

    async def depth(self) -> int:
        """Messages waiting or in flight (backpressure and autoscaling read this)."""
        ...

    async def close(self) -> None: ...
