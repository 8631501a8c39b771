"""SQL repositories for webhook endpoints, their outbox of events and their delivery attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from contrackt.adapters.db.tables import webhook_attempts, webhook_events, webhooks
from contrackt.domain.webhooks import DeliveryAttempt, Webhook, WebhookEvent


class SqlWebhookRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, webhook: Webhook) -> None:
        await self.conn.execute(
            webhooks.insert().values(
                id=webhook.id,
                tenant_id=webhook.tenant_id,
                url=webhook.url,
                events=list(webhook.events),
                secret_sealed=webhook.secret_sealed,
                created_at=webhook.created_at,
            )
        )

    async def get(self, tenant_id: str, webhook_id: str) -> Webhook | None:
        row = (
            await self.conn.execute(
                webhooks.select().where(webhooks.c.id == webhook_id, webhooks.c.tenant_id == tenant_id)
            )
        ).first()
        return _webhook(row._mapping) if row else None

    async def list(self, tenant_id: str) -> list[Webhook]:
        rows = await self.conn.execute(
            webhooks.select().where(webhooks.c.tenant_id == tenant_id).order_by(webhooks.c.created_at, webhooks.c.id)
        )
        return [_webhook(r._mapping) for r in rows]

    async def delete(self, tenant_id: str, webhook_id: str) -> bool:
        await self._drop_children(tenant_id, webhook_id)
        res = await self.conn.execute(
            webhooks.delete().where(webhooks.c.id == webhook_id, webhooks.c.tenant_id == tenant_id)
        )
        return res.rowcount == 1

    async def disable(self, tenant_id: str, webhook_id: str, at: datetime, reason: str) -> bool:
        res = await self.conn.execute(
            webhooks.update()
            .where(webhooks.c.id == webhook_id, webhooks.c.tenant_id == tenant_id, webhooks.c.disabled_at.is_(None))
            .values(disabled_at=at, disabled_reason=reason[:300])
        )
        if res.rowcount != 1:
            return False
        await self.conn.execute(
            webhook_events.delete().where(
                webhook_events.c.webhook_id == webhook_id, webhook_events.c.tenant_id == tenant_id
            )
        )
        return True

    async def delete_all(self, tenant_id: str) -> int:
        await self.conn.execute(webhook_events.delete().where(webhook_events.c.tenant_id == tenant_id))
        await self.conn.execute(webhook_attempts.delete().where(webhook_attempts.c.tenant_id == tenant_id))
        res = await self.conn.execute(webhooks.delete().where(webhooks.c.tenant_id == tenant_id))
        return int(res.rowcount)

    async def _drop_children(self, tenant_id: str, webhook_id: str) -> None:
        for table in (webhook_events, webhook_attempts):
            await self.conn.execute(
                table.delete().where(table.c.webhook_id == webhook_id, table.c.tenant_id == tenant_id)
            )


def _webhook(m: Any) -> Webhook:
    return Webhook(
        id=str(m["id"]),
        tenant_id=str(m["tenant_id"]),
        url=m["url"],
        events=[str(e) for e in m["events"]],
        secret_sealed=m["secret_sealed"],
        created_at=m["created_at"],
        disabled_at=m["disabled_at"],
        disabled_reason=m["disabled_reason"],
    )


class SqlWebhookDeliveryRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add_event(self, event: WebhookEvent) -> None:
        await self.conn.execute(
            webhook_events.insert().values(
                id=event.id,
                tenant_id=event.tenant_id,
                webhook_id=event.webhook_id,
                job_id=event.job_id,
                type=event.type,
                body=event.body,
                created_at=event.created_at,
                next_attempt_at=event.next_attempt_at,
                attempts=event.attempts,
            )
        )

    async def due(self, now: datetime, new_before: datetime, limit: int) -> list[tuple[str, str]]:
        rows = await self.conn.execute(
            sa.select(webhook_events.c.id, webhook_events.c.tenant_id)
            .where(*_due(now, new_before))
            .order_by(webhook_events.c.next_attempt_at)
            .limit(limit)
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def claim(
        self, event_id: str, now: datetime, new_before: datetime, lease_until: datetime
    ) -> WebhookEvent | None:
        res = await self.conn.execute(
            webhook_events.update()
            .where(webhook_events.c.id == event_id, *_due(now, new_before))
            .values(attempts=webhook_events.c.attempts + 1, next_attempt_at=lease_until)
        )
        if res.rowcount != 1:
            return None
        row = (await self.conn.execute(webhook_events.select().where(webhook_events.c.id == event_id))).first()
        return _event(row._mapping) if row else None

    async def settle(self, event_id: str, attempt: int, next_attempt_at: datetime | None) -> bool:
        if next_attempt_at is None:
            res = await self.conn.execute(webhook_events.delete().where(webhook_events.c.id == event_id))
        else:
            res = await self.conn.execute(
                webhook_events.update()
                .where(webhook_events.c.id == event_id, webhook_events.c.attempts == attempt)
                .values(next_attempt_at=next_attempt_at)
            )
        return res.rowcount == 1

    async def record_attempt(self, attempt: DeliveryAttempt, keep: int) -> None:
        await self.conn.execute(
            webhook_attempts.insert().values(
                tenant_id=attempt.tenant_id,
                webhook_id=attempt.webhook_id,
                event_id=attempt.event_id,
                event_type=attempt.event_type,
                job_id=attempt.job_id,
                attempt=attempt.attempt,
                at=attempt.at,
                duration_ms=attempt.duration_ms,
                outcome=attempt.outcome,
                status_code=attempt.status_code,
                error=attempt.error,
            )
        )
        # Only the newest ``keep``: everything at or below the keep-th newest id goes.
        cutoff = (
            sa.select(webhook_attempts.c.id)
            .where(webhook_attempts.c.webhook_id == attempt.webhook_id)
            .order_by(webhook_attempts.c.id.desc())
            .offset(keep)
            .limit(1)
            .scalar_subquery()
        )
        await self.conn.execute(
            webhook_attempts.delete().where(
                webhook_attempts.c.webhook_id == attempt.webhook_id, webhook_attempts.c.id <= cutoff
            )
        )

    async def attempts(self, tenant_id: str, webhook_id: str, limit: int) -> list[DeliveryAttempt]:
        rows = await self.conn.execute(
            webhook_attempts.select()
            .where(webhook_attempts.c.webhook_id == webhook_id, webhook_attempts.c.tenant_id == tenant_id)
            .order_by(webhook_attempts.c.id.desc())
            .limit(limit)
        )
        return [_attempt(r._mapping) for r in rows]


def _due(now: datetime, new_before: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        webhook_events.c.next_attempt_at <= now,
        sa.or_(webhook_events.c.attempts > 0, webhook_events.c.created_at <= new_before),
    )


def _event(m: Any) -> WebhookEvent:
    return WebhookEvent(
        id=m["id"],
        tenant_id=str(m["tenant_id"]),
        webhook_id=str(m["webhook_id"]),
        job_id=str(m["job_id"]),
        type=m["type"],
        body=m["body"],
        created_at=m["created_at"],
        next_attempt_at=m["next_attempt_at"],
        attempts=int(m["attempts"]),
    )


def _attempt(m: Any) -> DeliveryAttempt:
    return DeliveryAttempt(
        tenant_id=str(m["tenant_id"]),
        webhook_id=str(m["webhook_id"]),
        event_id=m["event_id"],
        event_type=m["event_type"],
        job_id=str(m["job_id"]),
        attempt=int(m["attempt"]),
        at=m["at"],
        duration_ms=int(m["duration_ms"]),
        outcome=m["outcome"],
        status_code=m["status_code"],
        error=m["error"],
    )
