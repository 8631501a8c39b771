"""Unit of work over SQLAlchemy Core: one transaction, repositories bound to it."""

from __future__ import annotations

import asyncio
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contrackt.adapters.db.audit_repository import SqlAuditRepository
from contrackt.adapters.db.checkpoints import SqlCheckpointRepository
from contrackt.adapters.db.job_repository import SqlJobRepository
from contrackt.adapters.db.repositories import (
    SqlApiKeyRepository,
    SqlOutboxRepository,
    SqlTenantKeyRepository,
    SqlTenantRepository,
)
from contrackt.adapters.db.usage import SqlUsageRepository
from contrackt.adapters.db.webhook_repositories import SqlWebhookDeliveryRepository, SqlWebhookRepository
from contrackt.ports.repositories import (
    ApiKeyRepository,
    AuditRepository,
    CheckpointRepository,
    JobRepository,
    OutboxRepository,
    TenantKeyRepository,
    TenantRepository,
    UsageRepository,
)
from contrackt.ports.webhooks import WebhookDeliveryRepository, WebhookRepository


class SqlUnitOfWork:
    tenants: TenantRepository
    tenant_keys: TenantKeyRepository
    api_keys: ApiKeyRepository
    jobs: JobRepository
    audit: AuditRepository
    outbox: OutboxRepository
    webhooks: WebhookRepository
    webhook_deliveries: WebhookDeliveryRepository
    checkpoints: CheckpointRepository
    usage: UsageRepository
    conn: AsyncConnection

    def __init__(
        self,
        engine: AsyncEngine,
        tenant_id: str | None,
        system: bool,
        lock: asyncio.Lock | None,
    ) -> None:
        if tenant_id is None and not system:
            raise ValueError("a unit of work is for one tenant, or system=True")
        self._engine = engine
        self._tenant_id = tenant_id
        self._system = system
        self._lock = lock
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        if self._lock is not None:
            await self._lock.acquire()
        try:
            self._conn = await self._engine.connect()
            await self._conn.begin()
            if self._engine.dialect.name == "postgresql":
                await self._set_scope(self._conn)
        except BaseException:
            await self._cleanup()
            raise
        conn = self.conn = self._conn
        self.tenants = SqlTenantRepository(conn)
        self.tenant_keys = SqlTenantKeyRepository(conn)
        self.api_keys = SqlApiKeyRepository(conn)
        self.jobs = SqlJobRepository(conn)
        self.audit = SqlAuditRepository(conn)
        self.outbox = SqlOutboxRepository(conn)
        self.webhooks = SqlWebhookRepository(conn)
        self.webhook_deliveries = SqlWebhookDeliveryRepository(conn)
        self.checkpoints = SqlCheckpointRepository(conn)
        self.usage = SqlUsageRepository(conn)
        return self

    async def _set_scope(self, conn: AsyncConnection) -> None:
        # Transaction-local settings (is_local = true): a pooled connection
        # carries nothing over to the next tenant.
        await conn.execute(
            text("SELECT set_config('app.current_tenant', :t, true), set_config('app.system', :s, true)"),
            {"t": self._tenant_id or "", "s": "on" if self._system else ""},
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._conn is not None:
                if exc_type is None:
                    await self._conn.commit()
                else:
                    await self._conn.rollback()
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        try:
            if self._conn is not None:
                await self._conn.close()
        finally:
            self._conn = None
            if self._lock is not None and self._lock.locked():
                self._lock.release()


class SqlUnitOfWorkFactory:
    """Creates units of work; on SQLite, they run one at a time in this process."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    def __call__(self, tenant_id: str | None = None, *, system: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, tenant_id, system, self._lock)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
