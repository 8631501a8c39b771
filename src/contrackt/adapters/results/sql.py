"""Results in a SQL table with an expiry column (embedded default)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from contrackt.adapters.db.tables import results
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory


class SqlResultStore:
    """Uses its own short transactions, scoped to the tenant (RLS on PostgreSQL)."""

    def __init__(self, uow: SqlUnitOfWorkFactory) -> None:
        self.uow = uow

    async def put(self, tenant_id: str, job_id: str, ciphertext: bytes, expires_at: datetime) -> None:
        async with self.uow(tenant_id) as u:
            conn = u.conn
            await conn.execute(results.delete().where(results.c.job_id == job_id))
            await conn.execute(
                results.insert().values(
                    job_id=job_id, tenant_id=tenant_id, ciphertext=ciphertext, expires_at=expires_at
                )
            )

    async def get(self, tenant_id: str, job_id: str) -> bytes | None:
        async with self.uow(tenant_id) as u:
            row = (
                await u.conn.execute(
                    sa.select(results.c.ciphertext).where(
                        results.c.job_id == job_id,
                        results.c.tenant_id == tenant_id,
                        results.c.expires_at > datetime.now(UTC),
                    )
                )
            ).first()
        return bytes(row[0]) if row else None

    async def delete(self, tenant_id: str, job_id: str) -> None:
        async with self.uow(tenant_id) as u:
            await u.conn.execute(results.delete().where(results.c.job_id == job_id, results.c.tenant_id == tenant_id))

    async def purge_expired(self, now: datetime) -> int:
        async with self.uow(system=True) as u:
            res = await u.conn.execute(results.delete().where(results.c.expires_at <= now))
        return int(res.rowcount)

    async def close(self) -> None:
        return None
