"""Port: the job queue (at-least-once delivery; the database holds the truth).

Workers take work across tenants fairly: every adapter hands out messages round-robin
over the tenants that have messages waiting, never in one global FIFO, so one tenant's
backlog does not delay another tenant's next job.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from contrackt.domain.jobs import JobMessage


class Delivery(Protocol):
    message: JobMessage
    deliveries: int  # how many times this message has been handed out, this one included

    async def ack(self) -> None:
        """Done: never deliver again. Call only after the outcome is committed."""
        ...

    async def retry(self, delay_s: float) -> None:
        """Hand the message out again after ``delay_s`` seconds (counts as a delivery)."""
        ...

    async def defer(self, delay_s: float, *, hold_tenant: bool = False) -> None:
        """Not now, and not a failure: hand the message out again after ``delay_s``
        seconds with the same ``deliveries``.

        ``hold_tenant``: the tenant is at its in-flight cap; the queue may hold back
        the tenant's other messages for as long (other tenants are served meanwhile).
        """
        ...

    async def touch(self) -> None:
        """Still working on it (called with every lease heartbeat): keep the queue from
        handing the message to another consumer. A no-op where the queue needs none."""
        ...

    async def dead_letter(self, reason: str) -> None:
        """Give up: park the message on the dead-letter queue and ack it."""
        ...


@dataclass(frozen=True)
class QueueStats:
    """What the backend says about the queue (metrics read it; docs/adr/0012-observability.md).

    ``oldest_age_s``: seconds the oldest message not yet handed to a worker has waited since
    it was (re-)enqueued; 0.0 when nothing waits; None where the backend cannot tell.
    """

    depth: int  # as ``depth()``: waiting, delayed or in flight
    dead_letters: int  # messages on the dead-letter queue
    oldest_age_s: float | None


class JobQueue(Protocol):
    async def publish(self, message: JobMessage) -> None: ...

    async def receive(self, consumer: str, timeout_s: float, *, skip_tenants: Collection[str] = ()) -> Delivery | None:
        """Next message for this consumer (round-robin over tenants, none of ``skip_tenants``),
        or None after ``timeout_s``. ``skip_tenants`` may change while the call waits (a live
        view): it is read whenever a message is about to be handed out."""
        ...

    async def depth(self) -> int:
        """Messages waiting, delayed or in flight (backpressure and autoscaling read this)."""
        ...

    async def stats(self) -> QueueStats:
        """Depth, dead letters and the oldest waiting message's age, in as few calls as the backend allows."""
        ...

    async def close(self) -> None: ...
