"""Webhook dispatcher: deliver due events from the outbox, retry with backoff, disable dead endpoints.

Runs on the worker side (``contrackt worker``, ``contrackt serve``); any number of dispatchers
may run at once. Each attempt is one claim (a conditional update in the tenant's own scope that
moves the event's next attempt past the dispatcher's timeout), one signed POST, and one
transaction that records the attempt and deletes, reschedules or gives up the event. A
dispatcher that dies mid-attempt leaves the event claimed until the lease runs out; then it is
sent again with the same ``webhook-id``, which is how receivers recognise a repeat: delivery is
at least once, and exactly once for a receiver that drops ids it has seen.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import structlog

from contrackt.domain.audit import AuditAction
from contrackt.domain.egress import redacted_url
from contrackt.domain.errors import DecryptionFailed, KeyUnavailable
from contrackt.domain.webhooks import (
    ATTEMPTS_KEPT,
    DeliveryAttempt,
    RetryPolicy,
    SendOutcome,
    Webhook,
    WebhookEvent,
    delivery_headers,
)
from contrackt.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_SECONDS
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWorkFactory
from contrackt.ports.webhooks import WebhookTransport
from contrackt.services import audit
from contrackt.services.crypto import PURPOSE_WEBHOOK_SECRET, key_version_of, open_sealed
from contrackt.services.keyring import Keyring

log = structlog.get_logger("contrackt.webhooks")

_random = secrets.SystemRandom()


class WebhookDispatcher:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        keyring: Keyring,
        transport: WebhookTransport,
        clock: Clock,
        *,
        policy: RetryPolicy,
        timeout_s: float,
        max_concurrency: int,
        hold_new_s: float = 0.0,
        jitter: Callable[[], float] = _random.random,
    ) -> None:
        self.uow = uow
        self.keyring = keyring
        self.transport = transport
        self.clock = clock
        self.policy = policy
        self.max_concurrency = max(1, max_concurrency)
        # One tenant's endpoints take at most half the slots: a slow receiver does not hold up
        # every other tenant's deliveries.
        self.per_tenant = max(1, self.max_concurrency // 2)
        self.hold_new = timedelta(seconds=max(0.0, hold_new_s))
        # The claim outlives the longest attempt (the transport's own timeout) with a margin.
        self.lease = timedelta(seconds=timeout_s + 30.0)
        self.jitter = jitter
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tenants: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def step(self) -> int:
        """Start deliveries of due events, within the concurrency caps; the number started."""
        free = self.max_concurrency - len(self._tasks)
        if free <= 0:
            return 0
        now = self.clock.now()
        async with self.uow(system=True) as uow:
            due = await uow.webhook_deliveries.due(now, now - self.hold_new, free * 4 + len(self._tasks))
        started = 0
        for event_id, tenant_id in due:
            if started >= free:
                break
            if event_id in self._tasks or self._tenants[tenant_id] >= self.per_tenant:
                continue
            self._start(event_id, tenant_id)
            started += 1
        return started

    def _start(self, event_id: str, tenant_id: str) -> None:
        task = asyncio.create_task(self._run(event_id, tenant_id))
        self._tasks[event_id] = task
        self._tenants[tenant_id] += 1

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(event_id, None)
            self._tenants[tenant_id] -= 1
            if self._tenants[tenant_id] <= 0:
                del self._tenants[tenant_id]

        task.add_done_callback(done)

    async def _run(self, event_id: str, tenant_id: str) -> None:
        structlog.contextvars.bind_contextvars(tenant_id=tenant_id)
        try:
            await self.deliver(event_id, tenant_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # the event stays claimed until its lease ends, then comes back
            log.exception("webhook.attempt.error")

    async def run_once(self) -> int:
        """Start what is due and wait for those deliveries (tools and tests)."""
        started = await self.step()
        await self.drain()
        return started

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self, grace_s: float) -> None:
        """Let attempts in flight finish within ``grace_s``, then cancel them (they come back later)."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, grace_s))
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def deliver(self, event_id: str, tenant_id: str) -> SendOutcome | None:
        """One attempt at one event, if it is still due; its outcome (None: nothing was sent)."""
        now = self.clock.now()
        async with self.uow(tenant_id) as uow:
            event = await uow.webhook_deliveries.claim(event_id, now, now - self.hold_new, now + self.lease)
            if event is None:
                return None
            hook = await uow.webhooks.get(tenant_id, event.webhook_id)
            if hook is None or not hook.active:
                await uow.webhook_deliveries.settle(event.id, event.attempts, None)
                return None
        try:
            secret = await self._secret(hook)
        except (KeyUnavailable, DecryptionFailed):
            # Crypto-shredded (tenant erased) or not ours: nothing may be signed for it any more.
            async with self.uow(tenant_id) as uow:
                await uow.webhook_deliveries.settle(event.id, event.attempts, None)
                await uow.webhooks.disable(tenant_id, hook.id, self.clock.now(), "the signing secret is unavailable")
            return None
        stamp = int(self.clock.now().timestamp())
        headers = delivery_headers(secret, event.id, stamp, event.body)
        try:
            outcome = await self.transport.post(hook.url, headers, event.body.encode())
        except Exception as exc:  # the port promises not to raise; a bug here must not lose the event
            outcome = SendOutcome(None, type(exc).__name__[:64], 0)
        await self._settle(hook, event, outcome)
        return outcome

    async def _secret(self, hook: Webhook) -> bytes:
        key = await self.keyring.data_key(hook.tenant_id, key_version_of(hook.secret_sealed))
        return open_sealed(key, hook.tenant_id, hook.id, PURPOSE_WEBHOOK_SECRET, hook.secret_sealed)

    async def _settle(self, hook: Webhook, event: WebhookEvent, outcome: SendOutcome) -> None:
        now = self.clock.now()
        next_at = None if outcome.ok else self.policy.next_attempt(event.created_at, now, event.attempts, self.jitter())
        result = "delivered" if outcome.ok else ("retrying" if next_at is not None else "failed")
        tenant_id = hook.tenant_id
        async with self.uow(tenant_id) as uow:
            await uow.webhook_deliveries.record_attempt(
                DeliveryAttempt(
                    tenant_id=tenant_id,
                    webhook_id=hook.id,
                    event_id=event.id,
                    event_type=event.type,
                    job_id=event.job_id,
                    attempt=event.attempts,
                    at=now,
                    duration_ms=outcome.duration_ms,
                    outcome=result,
                    status_code=outcome.status_code,
                    error=outcome.error,
                ),
                keep=ATTEMPTS_KEPT,
            )
            await uow.webhook_deliveries.settle(event.id, event.attempts, next_at)
            if result == "delivered":
                await audit.record(
                    uow,
                    self.clock,
                    tenant_id,
                    AuditAction.WEBHOOK_DELIVERED,
                    job_id=event.job_id,
                    webhook_id=hook.id,
                    url=redacted_url(hook.url),
                    event=event.type,
                    attempt=event.attempts,
                    status_code=outcome.status_code,
                )
            elif result == "failed":
                hours = round(self.policy.window_seconds / 3600, 2)
                reason = f"deliveries kept failing for {hours:g} h; last attempt: {outcome.describe()}"
                if await uow.webhooks.disable(tenant_id, hook.id, now, reason):
                    await audit.record(
                        uow,
                        self.clock,
                        tenant_id,
                        AuditAction.WEBHOOK_DISABLED,
                        job_id=event.job_id,
                        webhook_id=hook.id,
                        url=redacted_url(hook.url),
                        event=event.type,
                        attempt=event.attempts,
                        status_code=outcome.status_code,
                        reason=outcome.error,
                    )
        WEBHOOK_ATTEMPTS.labels(result).inc()
        WEBHOOK_SECONDS.observe(outcome.duration_ms / 1000)
        log.info(
            f"webhook.{result}",
            webhook_id=hook.id,
            job_id=event.job_id,
            attempt=event.attempts,
            status=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
