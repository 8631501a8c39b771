"""The document's SHA-256: told to its tenant (202, receipts, idempotent replays), never stored in clear."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from contrackt.bootstrap import Container
from contrackt.domain.errors import KeyUnavailable
from contrackt.domain.tenants import Principal
from contrackt.services.crypto import PURPOSE_DIGEST, key_version_of, open_sealed
from contrackt.services.keyring import Keyring, document_sha256
from contrackt.settings import Settings
from tests.fakes import fake_pdf
from tests.unit.lifecycle_support import auth, db_path, new_tenant, process_pending, wait_done


async def test_the_digest_is_sealed_and_dies_with_the_tenant(container: Container, settings: Settings) -> None:
    c = container
    key = await c.tenants.create("acme")
    principal = Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)
    pdf = fake_pdf("Contrato social, CNPJ 11.222.333/0001-81")
    sha = hashlib.sha256(pdf).digest()
    accepted = await c.intake.submit(principal, pdf)
    assert accepted.document_sha256 == sha.hex()
    assert await process_pending(c) == 1
    async with c.uow(key.tenant_id) as u:
        job = await u.jobs.get(key.tenant_id, accepted.job.id)
    assert job is not None and job.document_digest is not None
    # sealed: bound to tenant, job and purpose; the tenant reads it back
    assert sha not in job.document_digest
    data_key = await c.keyring.data_key(key.tenant_id, key_version_of(job.document_digest))
    assert open_sealed(data_key, key.tenant_id, job.id, PURPOSE_DIGEST, job.document_digest) == sha
    assert await document_sha256(c.keyring, job) == sha.hex()
    # nowhere in the database in clear: neither the hex nor the raw bytes
    await c.uow.close()  # flush the WAL into the file we read
    stored = b"".join(p.read_bytes() for p in db_path(settings).parent.glob("contrackt.db*"))
    assert sha.hex().encode() not in stored and sha not in stored

    await c.tenants.erase(key.tenant_id, c.blobs, c.results)
    fresh = Keyring(c.keys, c.uow, c.clock)  # another process, nothing cached
    with pytest.raises(KeyUnavailable):
        await fresh.data_key(key.tenant_id, key_version_of(job.document_digest))
    assert await document_sha256(fresh, job) is None


async def test_reused_idempotency_key_with_another_document_is_409(
    client: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    h = {**auth(t), "Idempotency-Key": "pedido-42"}
    original = fake_pdf("Contrato assinado")
    first = await client.post("/v1/extract", headers=h, content=original)
    assert first.status_code == 202

    other = await client.post("/v1/extract", headers=h, content=fake_pdf("Outro contrato"))
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
    assert other.headers["content-type"] == "application/problem+json"
    assert "another document" in other.json()["detail"]
    documented = (await client.get("/openapi.json")).json()["paths"]["/v1/extract"]["post"]["responses"]["409"]
    assert documented["description"].startswith("idempotency_conflict")

    again = await client.post("/v1/extract", headers=h, content=original)
    assert again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["document_sha256"] == first.json()["document_sha256"] == hashlib.sha256(original).hexdigest()
    # the refused upload left nothing behind: one job, one stored document
    async with container.uow(t["tenant_id"]) as u:
        jobs = await u.jobs.list_for_tenant(t["tenant_id"])
    assert [j.id for j in jobs] == [first.json()["job_id"]]
    assert [b.key for b in await container.blobs.list(f"{t['tenant_id']}/")] in ([], [jobs[0].blob_key])
    # the same key is another tenant's own business
    u2 = await new_tenant(container, "other")
    theirs = await client.post("/v1/extract", headers={**auth(u2), "Idempotency-Key": "pedido-42"}, content=original)
    assert theirs.status_code == 202 and theirs.json()["job_id"] != first.json()["job_id"]


async def test_replay_tells_the_original_hash_after_the_job_ran_and_the_key_rotated(
    client: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    h = {**auth(t), "Idempotency-Key": "lote-7"}
    pdf = fake_pdf("Nota fiscal")
    first = (await client.post("/v1/extract", headers=h, content=pdf)).json()
    await wait_done(client, first["job_id"], auth(t))
    await container.keyring.rotate(t["tenant_id"])  # the digest stays sealed under version 1
    replay = await client.post("/v1/extract", headers=h, content=pdf)
    assert replay.status_code == 202
    assert replay.json() == {**first, "status": "completed"}


async def test_concurrent_requests_with_one_key_and_two_documents(
    client: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    h = {**auth(t), "Idempotency-Key": "corrida"}
    answers = await asyncio.gather(
        *(client.post("/v1/extract", headers=h, content=fake_pdf(f"documento {i}")) for i in range(2))
    )
    assert sorted(r.status_code for r in answers) == [202, 409]
    async with container.uow(t["tenant_id"]) as u:
        assert len(await u.jobs.list_for_tenant(t["tenant_id"])) == 1
