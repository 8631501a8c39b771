"""Webhook endpoints: register (egress rules, sealed secret), list, remove, recent attempts; job events.

Events are written by ``emit_job_event`` inside the caller's transaction, the one whose
conditional update finished the job: exactly one event per job outcome per endpoint, and none
unless the job really moved. The dispatcher (services/webhook_dispatch.py) delivers them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from contrackt.domain.audit import AuditAction
from contrackt.domain.egress import EgressRefused, check_address, literal_address, parse_target, redacted_url
from contrackt.domain.errors import InvalidRequest, TooManyWebhooks, WebhookNotFound, WebhookUrlRefused
from contrackt.domain.ids import new_id, parse_id
from contrackt.domain.jobs import Job
from contrackt.domain.webhooks import (
    EVENT_TYPES,
    DeliveryAttempt,
    Webhook,
    WebhookEvent,
    event_body,
    new_event_id,
    new_secret,
)
from contrackt.ports.clock import Clock
from contrackt.ports.repositories import UnitOfWork, UnitOfWorkFactory
from contrackt.ports.webhooks import WebhookTransport
from contrackt.services import audit
from contrackt.services.crypto import PURPOSE_WEBHOOK_SECRET, seal
from contrackt.services.keyring import Keyring

log = structlog.get_logger("contrackt.webhooks")

RESOLVE_TIMEOUT_S = 5.0
MAX_LISTED_ATTEMPTS = 100


@dataclass(frozen=True)
class NewWebhook:
    webhook: Webhook
    secret: str  # whsec_…, shown once, never stored in clear


async def emit_job_event(uow: UnitOfWork, clock: Clock, job: Job, event_type: str, error: dict[str, str] | None) -> int:
    """Queue ``event_type`` for every active endpoint of the job's tenant that subscribed to it.

    Call inside the transaction that moved the job (only the call that moved it emits). The body
    names the job, its status, its links and (failed) its error code and message; no document data.
    Returns the number of events written.
    """
    now = clock.now()
    status = "completed" if event_type == "job.completed" else "failed"
    written = 0
    for hook in await uow.webhooks.list(job.tenant_id):
        if not hook.active or event_type not in hook.events:
            continue
        await uow.webhook_deliveries.add_event(
            WebhookEvent(
                id=new_event_id(),
                tenant_id=job.tenant_id,
                webhook_id=hook.id,
                job_id=job.id,
                type=event_type,
                body=event_body(event_type, now, job.id, status, error),
                created_at=now,
                next_attempt_at=now,
            )
        )
        written += 1
    return written


class WebhookService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        keyring: Keyring,
        clock: Clock,
        transport: WebhookTransport,
        *,
        allow_private: bool,
        max_per_tenant: int,
    ) -> None:
        self.uow = uow
        self.keyring = keyring
        self.clock = clock
        self.transport = transport
        self.allow_private = allow_private
        self.max_per_tenant = max_per_tenant

    async def check_url(self, url: str) -> str:
        """The URL if it may be registered: its form, then every address its host resolves to."""
        try:
            target = parse_target(url, allow_private=self.allow_private)
        except EgressRefused as exc:
            raise WebhookUrlRefused(f"The webhook URL is not allowed: {exc.reason}") from None
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                literal = literal_address(target.host)
                addresses = [literal] if literal else await self.transport.resolve(target.host, target.port)
        except (OSError, TimeoutError):
            raise WebhookUrlRefused("The webhook URL is not allowed: its host does not resolve") from None
        if not addresses:
            raise WebhookUrlRefused("The webhook URL is not allowed: its host does not resolve")
        try:
            for address in addresses:
                check_address(address, allow_private=self.allow_private)
        except EgressRefused as exc:
            raise WebhookUrlRefused(f"The webhook URL is not allowed: {exc.reason}") from None
        return target.url

    async def add(self, tenant_id: str, url: str, events: list[str], *, api_key_id: str | None = None) -> NewWebhook:
        wanted = [e for e in EVENT_TYPES if e in set(events)]
        if not wanted or len(set(events)) != len(wanted):
            raise InvalidRequest("events must be a non-empty list of: " + ", ".join(EVENT_TYPES))
        url = await self.check_url(url)
        text, raw = new_secret()
        webhook_id = new_id()
        version, key = await self.keyring.current(tenant_id)
        hook = Webhook(
            id=webhook_id,
            tenant_id=tenant_id,
            url=url,
            events=wanted,
            secret_sealed=seal(key, version, tenant_id, webhook_id, PURPOSE_WEBHOOK_SECRET, raw),
            created_at=self.clock.now(),
        )
        async with self.uow(tenant_id) as uow:
            # The audit append comes first: on PostgreSQL it serialises the tenant's transactions
            # (its per-tenant chain lock), so two concurrent adds cannot both pass the count.
            await audit.record(
                uow,
                self.clock,
                tenant_id,
                AuditAction.WEBHOOK_ADDED,
                api_key_id=api_key_id,
                webhook_id=webhook_id,
                url=redacted_url(url),
                event=",".join(wanted),
            )
            if len(await uow.webhooks.list(tenant_id)) >= self.max_per_tenant:
                raise TooManyWebhooks(f"At most {self.max_per_tenant} webhooks per tenant; remove one first")
            await uow.webhooks.add(hook)
        log.info("webhook.added", webhook_id=webhook_id, url_scheme=url.split(":", 1)[0])
        return NewWebhook(webhook=hook, secret=text)

    async def list_for_tenant(self, tenant_id: str) -> list[Webhook]:
        async with self.uow(tenant_id) as uow:
            return await uow.webhooks.list(tenant_id)

    async def get(self, tenant_id: str, webhook_id: str) -> Webhook:
        wid = parse_id(webhook_id)
        if wid is None:
            raise WebhookNotFound()
        async with self.uow(tenant_id) as uow:
            hook = await uow.webhooks.get(tenant_id, wid)
        if hook is None:
            raise WebhookNotFound()
        return hook

    async def remove(self, tenant_id: str, webhook_id: str, *, api_key_id: str | None = None) -> None:
        """Remove the endpoint with its pending events and attempts (404 for another tenant's)."""
        wid = parse_id(webhook_id)
        if wid is None:
            raise WebhookNotFound()
        async with self.uow(tenant_id) as uow:
            if not await uow.webhooks.delete(tenant_id, wid):
                raise WebhookNotFound()
            await audit.record(
                uow, self.clock, tenant_id, AuditAction.WEBHOOK_REMOVED, api_key_id=api_key_id, webhook_id=wid
            )
        log.info("webhook.removed", webhook_id=wid)

    async def deliveries(self, tenant_id: str, webhook_id: str, limit: int = 50) -> list[DeliveryAttempt]:
        hook = await self.get(tenant_id, webhook_id)
        async with self.uow(tenant_id) as uow:
            return await uow.webhook_deliveries.attempts(tenant_id, hook.id, min(max(limit, 1), MAX_LISTED_ATTEMPTS))
