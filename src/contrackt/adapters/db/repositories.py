"""SQL repositories (one per aggregate), bound to a unit of work's connection: tenants, their keys
and API keys, the outbox. Jobs: ``job_repository.py``; the audit trail: ``audit_repository.py``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from contrackt.adapters.db.tables import (
    api_keys,
    outbox,
    tenant_keys,
    tenants,
)
from contrackt.domain.jobs import JobMessage
from contrackt.domain.tenants import ApiKey, Tenant


class _Repo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn


class SqlTenantRepository(_Repo):
    async def add(self, tenant: Tenant) -> None:
        await self.conn.execute(
            tenants.insert().values(
                id=tenant.id,
                name=tenant.name,
                created_at=tenant.created_at,
                fingerprint_key_wrapped=tenant.fingerprint_key_wrapped,
                delete_on_read=tenant.delete_on_read,
                rate_limit_extract=tenant.rate_limit_extract,
                rate_limit_status=tenant.rate_limit_status,
                max_inflight=tenant.max_inflight,
                max_backlog=tenant.max_backlog,
            )
        )

    async def get(self, tenant_id: str) -> Tenant | None:
        row = (await self.conn.execute(tenants.select().where(tenants.c.id == tenant_id))).first()
        return _tenant(row._mapping) if row else None

    async def list(self) -> list[Tenant]:
        rows = await self.conn.execute(tenants.select().order_by(tenants.c.created_at))
        return [_tenant(r._mapping) for r in rows]

    async def mark_erased(self, tenant_id: str, at: datetime) -> None:
        await self.conn.execute(
            tenants.update().where(tenants.c.id == tenant_id).values(erased_at=at, fingerprint_key_wrapped=None)
        )

    async def set_limits(self, tenant_id: str, max_inflight: int | None, max_backlog: int | None) -> bool:
        res = await self.conn.execute(
            tenants.update().where(tenants.c.id == tenant_id).values(max_inflight=max_inflight, max_backlog=max_backlog)
        )
        return res.rowcount == 1


def _tenant(m: Any) -> Tenant:
    return Tenant(
        id=str(m["id"]),
        name=m["name"],
        created_at=m["created_at"],
        fingerprint_key_wrapped=m["fingerprint_key_wrapped"],
        delete_on_read=bool(m["delete_on_read"]),
        rate_limit_extract=m["rate_limit_extract"],
        rate_limit_status=m["rate_limit_status"],
        erased_at=m["erased_at"],
        max_inflight=m["max_inflight"],
        max_backlog=m["max_backlog"],
    )


class SqlTenantKeyRepository(_Repo):
    async def add(self, tenant_id: str, version: int, wrapped: bytes, at: datetime) -> None:
        await self.conn.execute(
            tenant_keys.insert().values(tenant_id=tenant_id, version=version, wrapped_key=wrapped, created_at=at)
        )

    async def get(self, tenant_id: str, version: int) -> bytes | None:
        row = (
            await self.conn.execute(
                sa.select(tenant_keys.c.wrapped_key).where(
                    tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.version == version
                )
            )
        ).first()
        return row[0] if row else None

    async def current_version(self, tenant_id: str) -> int | None:
        row = (
            await self.conn.execute(
                sa.select(sa.func.max(tenant_keys.c.version)).where(
                    tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.wrapped_key.is_not(None)
                )
            )
        ).first()
        return int(row[0]) if row and row[0] is not None else None

    async def destroy_all(self, tenant_id: str, at: datetime) -> int:
        res = await self.conn.execute(
            tenant_keys.update()
            .where(tenant_keys.c.tenant_id == tenant_id, tenant_keys.c.wrapped_key.is_not(None))
            .values(wrapped_key=None, destroyed_at=at)
        )
        return int(res.rowcount)


class SqlApiKeyRepository(_Repo):
    async def add(self, key: ApiKey) -> None:
        await self.conn.execute(
            api_keys.insert().values(
                id=key.id,
                tenant_id=key.tenant_id,
                prefix=key.prefix,
                key_hash=key.key_hash,
                created_at=key.created_at,
            )
        )

    async def find_by_prefix(self, prefix: str) -> ApiKey | None:
        row = (await self.conn.execute(api_keys.select().where(api_keys.c.prefix == prefix))).first()
        return _api_key(row._mapping) if row else None

    async def active_ids(self, key_ids: Sequence[str]) -> set[str]:
        if not key_ids:
            return set()
        rows = await self.conn.execute(
            sa.select(api_keys.c.id).where(api_keys.c.id.in_(list(key_ids)), api_keys.c.revoked_at.is_(None))
        )
        return {str(r[0]) for r in rows}

    async def list(self, tenant_id: str) -> list[ApiKey]:
        rows = await self.conn.execute(
            api_keys.select().where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
        )
        return [_api_key(r._mapping) for r in rows]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        res = await self.conn.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=at)
        )
        return bool(res.rowcount)

    async def revoke_all(self, tenant_id: str, at: datetime) -> int:
        res = await self.conn.execute(
            api_keys.update()
            .where(api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return int(res.rowcount)


def _api_key(m: Any) -> ApiKey:
    return ApiKey(
        id=str(m["id"]),
        tenant_id=str(m["tenant_id"]),
        prefix=m["prefix"],
        key_hash=m["key_hash"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


class SqlOutboxRepository(_Repo):
    async def add(self, message: JobMessage, at: datetime) -> None:
        await self.conn.execute(
            outbox.insert().values(
                tenant_id=message.tenant_id,
                job_id=message.job_id,
                payload=message.to_dict(),
                created_at=at,
            )
        )

    async def take(self, limit: int) -> list[tuple[int, JobMessage]]:
        stmt = (
            sa.select(outbox.c.id, outbox.c.payload)
            .where(outbox.c.sent_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = await self.conn.execute(stmt)
        return [(int(r[0]), JobMessage.from_dict(dict(r[1]))) for r in rows]

    async def mark_sent(self, ids: list[int], at: datetime) -> None:
        if ids:
            await self.conn.execute(outbox.update().where(outbox.c.id.in_(ids)).values(sent_at=at))
