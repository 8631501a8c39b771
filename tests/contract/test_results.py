"""ResultStore contract: memory, SQL on SQLite, SQL on PostgreSQL (service role, RLS), Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from contrackt.adapters.db import tables
from contrackt.adapters.results.sql import SqlResultStore
from contrackt.ports.results import ResultStore
from tests.contract.services import FreshPostgres, service


@pytest.fixture(params=["memory", "sql-sqlite", "sql-postgres", "redis"])
async def results(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResultStore]:
    kind = request.param
    if kind == "memory":
        from contrackt.adapters.results.memory import MemoryResultStore

        yield MemoryResultStore()
        return
    if kind == "redis":
        from contrackt.adapters.results.redis import RedisResultStore

        prefix = f"ctk-test-result-{uuid.uuid4().hex[:8]}"
        store = RedisResultStore.from_url(service("REDIS"), prefix=prefix)
        try:
            yield store
        finally:
            keys = [k async for k in store.client.scan_iter(f"{prefix}:*")]
            if keys:
                await store.client.delete(*keys)
            await store.close()
        return
    from contrackt.adapters.db.engine import make_engine
    from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
    from contrackt.adapters.results.sql import SqlResultStore

    pg: FreshPostgres | None = None
    if kind == "sql-sqlite":
        from contrackt.adapters.db.migrate import upgrade

        url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
        await asyncio.to_thread(upgrade, url)
    else:
        pg = FreshPostgres()
        await asyncio.to_thread(pg.migrate)
        url = pg.service_url
    uow = SqlUnitOfWorkFactory(make_engine(url))
    try:
        yield SqlResultStore(uow)
    finally:
        await uow.close()
        if pg is not None:
            await pg.drop()


def ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


def soon(seconds: float = 300) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_put_get_delete(results: ResultStore) -> None:
    tenant, job = ids()
    assert await results.get(tenant, job) is None
    await results.put(tenant, job, b"\x01ciphertext", soon())
    assert await results.get(tenant, job) == b"\x01ciphertext"
    await results.put(tenant, job, b"newer", soon())
    assert await results.get(tenant, job) == b"newer"
    await results.delete(tenant, job)
    assert await results.get(tenant, job) is None
    await results.delete(tenant, job)  # idempotent


async def test_scoped_to_tenant(results: ResultStore) -> None:
    tenant, job = ids()
    other = str(uuid.uuid4())
    await results.put(tenant, job, b"mine", soon())
    assert await results.get(other, job) is None
    assert await results.read(other, job, 0, 4) is None
    await results.delete(other, job)
    assert await results.get(tenant, job) == b"mine"
    assert await results.read(tenant, job, 0, 4) == b"mine"
    if isinstance(results, SqlResultStore) and results.uow.engine.dialect.name == "postgresql":
        # Row-level security, not only the WHERE clause: the slice query without a tenant
        # filter, in the other tenant's unit of work, sees no row at all.
        async with results.uow(other) as u:
            piece = sa.select(sa.func.substring(tables.results.c.ciphertext, 1, 4))
            assert (await u.conn.execute(piece)).all() == []
        async with results.uow(tenant) as u:
            assert [bytes(r[0]) for r in await u.conn.execute(piece)] == [b"mine"]


async def test_read_in_bounded_pieces(results: ResultStore) -> None:
    tenant, job = ids()
    blob = os.urandom(3 * 1024 * 1024 + 12345)
    assert await results.read(tenant, job, 0, 10) is None
    await results.put(tenant, job, blob, soon())
    piece = 65536 + 16
    pieces = []
    for offset in range(0, len(blob), piece):
        got = await results.read(tenant, job, offset, piece)
        assert got is not None and len(got) == min(piece, len(blob) - offset)
        pieces.append(got)
    assert b"".join(pieces) == blob
    middle = 2 * 1024 * 1024 + 7
    assert await results.read(tenant, job, middle, 1000) == blob[middle : middle + 1000]
    assert await results.read(tenant, job, len(blob) - 5, 100) == blob[-5:]  # short at the end
    assert await results.read(tenant, job, len(blob), 100) == b""  # past the end, yet present
    assert await results.read(tenant, job, len(blob) + 10**6, 1) == b""
    with pytest.raises(ValueError):
        await results.read(tenant, job, -1, 10)
    with pytest.raises(ValueError):
        await results.read(tenant, job, 0, 0)
    await results.put(tenant, job, b"replaced", soon())
    assert await results.read(tenant, job, 0, piece) == b"replaced"
    await results.delete(tenant, job)
    assert await results.read(tenant, job, 0, piece) is None


async def test_expiry(results: ResultStore) -> None:
    tenant, job = ids()
    _, live = ids()
    await results.put(tenant, job, b"short", soon(0.6))
    await results.put(tenant, live, b"long", soon())
    assert await results.get(tenant, job) == b"short"
    assert await results.read(tenant, job, 1, 3) == b"hor"
    await asyncio.sleep(0.8)
    assert await results.get(tenant, job) is None
    assert await results.read(tenant, job, 1, 3) is None
    purged = await results.purge_expired(datetime.now(UTC))
    assert purged in (0, 1)  # 0 where the backend expires by itself
    assert await results.purge_expired(datetime.now(UTC)) == 0
    assert await results.get(tenant, live) == b"long"
