"""Evidence over the production backends: DELETE racing a worker over PostgreSQL + Redis results,
and one receipt-signing key shared by every process of a PostgreSQL deployment (local master key or KMS)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from contrackt.adapters.results.redis import RedisResultStore
from contrackt.bootstrap import Container, build
from contrackt.domain.tenants import Principal
from contrackt.services.receipts import ReceiptService, verify_receipt
from tests.contract.services import FreshPostgres, service
from tests.contract.test_keys import _kms_key
from tests.fakes import FakeExtractor, fake_pdf
from tests.interleave import QuietExtractor, World
from tests.unit.lifecycle_support import process_pending
from tests.unit.test_delete_race import explore_delete_during_processing

pytestmark = pytest.mark.integration


@pytest.mark.slow  # about 400 runs over PostgreSQL + Redis: under a minute
async def test_every_interleaving_of_delete_and_processing_over_postgres_and_redis(
    pg: FreshPostgres, tmp_path: Path
) -> None:
    c = build(pg.settings(home=tmp_path / "home", storage_url="memory://"))
    prefix = f"ctk-test-race-{uuid.uuid4().hex[:8]}"
    results = RedisResultStore.from_url(service("REDIS"), prefix=prefix)
    try:
        world = World(
            uow=c.uow,
            results=results,
            blobs=c.blobs,
            keyring=c.keyring,
            clock=c.clock,
            signer=c.signer,
            extractor=QuietExtractor(FakeExtractor()),
            tenants=c.tenants,
            public_key=await c.signer.public_key_raw(),
        )
        started = time.monotonic()
        runs, endings = await explore_delete_during_processing(world)
        print(f"{runs} orders over PostgreSQL + Redis in {time.monotonic() - started:.1f}s: {dict(endings)}")
        assert runs > 300
        assert set(endings) == {("completed", ("document", "result")), ("failed", ("document",))}
        assert [k async for k in results.client.scan_iter(f"{prefix}:*")] == []  # nothing left in Redis
    finally:
        keys = [k async for k in results.client.scan_iter(f"{prefix}:*")]
        if keys:
            await results.client.delete(*keys)
        await results.close()
        await c.close()


async def _one_receipt(c: Container) -> dict[str, object]:
    key = await c.tenants.create("acme")
    principal = Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)
    job = (await c.intake.submit(principal, fake_pdf("Procuração"))).job
    assert await process_pending(c) == 1
    return await ReceiptService(c.uow, c.signer, c.clock, c.keyring).issue(principal, job.id)


@pytest.mark.parametrize("keys", ["local", "kms"])
async def test_every_process_of_a_postgres_deployment_signs_with_one_key(
    pg: FreshPostgres, tmp_path: Path, keys: str
) -> None:
    if keys == "kms":
        endpoint = service("KMS")
        keys_url = f"kms://{await _kms_key(endpoint)}?region=us-east-1&endpoint={endpoint}"
        homes = [tmp_path / "pod-a", tmp_path / "pod-b"]  # nothing shared but the database and KMS
    else:
        keys_url = "local://"
        homes = [tmp_path / "shared-home"] * 2  # the local master key must be shared
    pods = [build(pg.settings(home=home, keys_url=keys_url, storage_url="memory://")) for home in homes]
    try:
        first, second = await asyncio.gather(*(p.signer.public_key_raw() for p in pods))
        assert first == second
        receipt = await _one_receipt(pods[0])
        verify_receipt(receipt, await pods[1].signer.public_key_raw())
        for home in homes:
            assert not list(home.glob("*receipt*"))
    finally:
        for p in pods:
            await p.close()
    # A process started later loads the same key.
    later = build(pg.settings(home=homes[0], keys_url=keys_url, storage_url="memory://"))
    try:
        assert await later.signer.public_key_raw() == first
    finally:
        await later.close()
    # The service role reads and inserts the key; it can neither replace nor destroy it.
    svc = await asyncpg.connect(pg.dsn(pg.service_url))
    try:
        assert await svc.fetchval("SELECT count(*) FROM service_keys") == 1
        assert bytes(await svc.fetchval("SELECT public_key FROM service_keys")) == first
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await svc.execute("UPDATE service_keys SET public_key = '\\x00'::bytea")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await svc.execute("DELETE FROM service_keys")
        with pytest.raises(asyncpg.UniqueViolationError):  # a second key under the same name
            await svc.execute(
                "INSERT INTO service_keys (name, algorithm, wrapped_private, public_key, created_at) "
                "VALUES ('receipt-signing', 'Ed25519', '\\x00'::bytea, '\\x00'::bytea, now())"
            )
    finally:
        await svc.close()
