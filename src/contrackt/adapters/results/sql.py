"""Results in a SQL table with an expiry column (embedded default)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

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
            row = (await u.conn.execute(sa.select(results.c.ciphertext).where(*_live(tenant_id, job_id)))).first()
        return bytes(row[0]) if row else None

    async def read(self, tenant_id: str, job_id: str, offset: int, length: int) -> bytes | None:
        if offset < 0 or length < 1:
            raise ValueError("offset must be >= 0 and length >= 1")
        async with self.uow(tenant_id) as u:
            conn = u.conn
            if conn.dialect.name == "sqlite":
                return await _sqlite_read(conn, tenant_id, job_id, offset, length)
            # PostgreSQL fetches only the TOAST chunks that hold the slice (the ciphertext is
            # incompressible, so it is stored uncompressed). RLS applies: tenant-scoped transaction.
            piece = sa.func.substring(results.c.ciphertext, offset + 1, length)
            row = (await conn.execute(sa.select(piece).where(*_live(tenant_id, job_id)))).first()
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


def _live(tenant_id: str, job_id: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        results.c.job_id == job_id,
        results.c.tenant_id == tenant_id,
        results.c.expires_at > datetime.now(UTC),
    )


async def _sqlite_read(conn: AsyncConnection, tenant_id: str, job_id: str, offset: int, length: int) -> bytes | None:
    # SQLite's substr() loads the whole blob for every call (measured: 45 ms for 64 KiB of a
    # 60 MB row), so read through its incremental blob I/O instead, in the same transaction.
    query = sa.select(sa.literal_column("rowid"), sa.func.length(results.c.ciphertext)).where(*_live(tenant_id, job_id))
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    rowid, size = int(row[0]), int(row[1])
    if offset >= size:
        return b""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # the aiosqlite connection

    def read() -> bytes:
        # Runs on aiosqlite's own thread, where its sqlite3 connection lives. aiosqlite has no
        # public call for blob I/O; ``_execute`` (what its public methods use) queues a function
        # there, as SQLAlchemy's adapter does with its queue. The SQLite contract test covers it.
        with driver._conn.blobopen("results", "ciphertext", rowid, readonly=True) as blob:
            blob.seek(offset)
            return bytes(blob.read(length))

    data: bytes = await driver._execute(read)
    return data
