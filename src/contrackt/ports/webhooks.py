"""Ports: webhook endpoints and deliveries (repositories), and the HTTP transport that sends them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from contrackt.domain.webhooks import DeliveryAttempt, SendOutcome, Webhook, WebhookEvent


class WebhookRepository(Protocol):
    async def add(self, webhook: Webhook) -> None: ...
    async def get(self, tenant_id: str, webhook_id: str) -> Webhook | None: ...
    async def list(self, tenant_id: str) -> list[Webhook]: ...
    async def delete(self, tenant_id: str, webhook_id: str) -> bool:
        """Remove the endpoint, its pending events and its attempts; True if it existed."""
        ...

    async def disable(self, tenant_id: str, webhook_id: str, at: datetime, reason: str) -> bool:
        """Disable an active endpoint and drop its pending events; True if this call disabled it."""
        ...

    async def delete_all(self, tenant_id: str) -> int:
        """Every endpoint of the tenant, with its events and attempts (tenant erasure)."""
        ...


class WebhookDeliveryRepository(Protocol):
    async def add_event(self, event: WebhookEvent) -> None: ...
    async def due(self, now: datetime, new_before: datetime, limit: int) -> list[tuple[str, str]]:
        """System: (event id, tenant id) of due events, oldest first.

        Due: the next attempt is at or before ``now``, and an event never attempted yet was
        created at or before ``new_before`` (the dispatcher may hold new events a moment).
        """
        ...

    async def claim(
        self, event_id: str, now: datetime, new_before: datetime, lease_until: datetime
    ) -> WebhookEvent | None:
        """Take a due event (as in ``due``) for one attempt: attempts + 1, not due again before
        ``lease_until``. None when it is not due any more (another dispatcher took it) or gone.
        """
        ...

    async def settle(self, event_id: str, attempt: int, next_attempt_at: datetime | None) -> bool:
        """After attempt ``attempt``: delete the event (None), or schedule its next attempt.

        Scheduling applies only while no later attempt claimed the event; True if it applied.
        """
        ...

    async def record_attempt(self, attempt: DeliveryAttempt, keep: int) -> None:
        """Store an attempt; only the newest ``keep`` of its webhook are kept."""
        ...

    async def attempts(self, tenant_id: str, webhook_id: str, limit: int) -> list[DeliveryAttempt]:
        """The webhook's most recent attempts, newest first."""
        ...


class WebhookTransport(Protocol):
    """Resolves hosts and sends signed deliveries, refusing any address the egress rules forbid."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to (raises OSError when it does not resolve)."""
        ...

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> SendOutcome:
        """One POST, redirects not followed, bounded in time and in what is read; never raises."""
        ...
