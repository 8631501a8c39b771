"""Tenant erasure (crypto-shredding): keys destroyed, leftovers unreadable, other tenants untouched."""

from __future__ import annotations

import httpx
import pytest

from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.domain.errors import KeyUnavailable, NotFound
from contrackt.domain.jobs import JobStatus
from contrackt.domain.tenants import Principal
from contrackt.services import audit
from contrackt.services import keyring as keyring_module
from contrackt.services.crypto import PURPOSE_DOCUMENT, fingerprint, key_version_of, open_sealed
from contrackt.services.keyring import Keyring
from contrackt.services.result_object import open_result_part, result_key_version
from contrackt.settings import Settings
from tests.fakes import fake_pdf
from tests.unit.lifecycle_support import process_pending, raw_db


async def test_erase_shreds_keys_and_leaves_other_tenants_alone(
    container: Container, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = container
    a, b = await c.tenants.create("a"), await c.tenants.create("b")
    pa = Principal(tenant_id=a.tenant_id, api_key_id=a.key_id)
    pb = Principal(tenant_id=b.tenant_id, api_key_id=b.key_id)
    doc = fake_pdf("Contrato de A, CPF 529.982.247-25")

    done = await c.intake.submit(pa, doc)  # processed: leaves an encrypted result
    theirs = await c.intake.submit(pb, fake_pdf("Contrato de B"))
    assert await process_pending(c) == 2
    pending = await c.intake.submit(pa, fake_pdf("ainda na fila"))  # not processed: its blob waits
    leftover_result = await c.results.get(a.tenant_id, done.job.id)
    leftover_blob = await c.blobs.get(f"{a.tenant_id}/{pending.job.id}.enc")
    assert leftover_result is not None
    assert done.job.fingerprint == fingerprint(await c.keyring.fingerprint_key(a.tenant_id), doc)

    # Another process that read A's key just before the erase keeps it for at most the cache TTL.
    monkeypatch.setattr(keyring_module, "CACHE_SECONDS", 0.2)
    other_process = Keyring(c.keys, c.uow, c.clock)
    await other_process.data_key(a.tenant_id, 1)

    report = await c.tenants.erase(a.tenant_id, c.blobs, c.results)
    assert report == {"keys_destroyed": 1, "api_keys_revoked": 1, "blobs_deleted": 1}

    # The copies taken before the erase can no longer be opened: the keys are gone, in every process.
    for ring in (c.keyring, Keyring(c.keys, c.uow, c.clock)):
        with pytest.raises(KeyUnavailable):
            await ring.data_key(a.tenant_id, result_key_version(leftover_result))
        with pytest.raises(KeyUnavailable):
            await ring.data_key(a.tenant_id, key_version_of(leftover_blob))
        with pytest.raises(KeyUnavailable):
            await ring.current(a.tenant_id)
        # the fingerprint key is gone too: the stored fingerprint cannot be recomputed or checked
        with pytest.raises(KeyUnavailable):
            await ring.fingerprint_key(a.tenant_id)
    await other_process.data_key(a.tenant_id, 1)  # still cached, within the TTL
    other_process._cache.clear()  # the TTL passing, without waiting
    with pytest.raises(KeyUnavailable):
        await other_process.data_key(a.tenant_id, 1)

    with raw_db(settings) as db:
        a_hex = a.tenant_id.replace("-", "")
        assert db.execute(
            "SELECT count(*) FROM tenant_keys WHERE replace(tenant_id,'-','') = ? AND wrapped_key IS NOT NULL", (a_hex,)
        ).fetchone() == (0,)
        assert db.execute(
            "SELECT fingerprint_key_wrapped FROM tenants WHERE replace(id,'-','') = ?", (a_hex,)
        ).fetchone() == (None,)
        assert db.execute("SELECT count(*) FROM results WHERE replace(tenant_id,'-','') = ?", (a_hex,)).fetchone() == (
            0,
        )

    # Blobs and results deleted; the unfinished job failed with a reason.
    assert await c.blobs.list(f"{a.tenant_id}/") == []
    assert await c.results.get(a.tenant_id, done.job.id) is None
    async with c.uow(a.tenant_id) as uow:
        job = await uow.jobs.get(a.tenant_id, pending.job.id)
    assert job is not None and job.status is JobStatus.FAILED and job.error_code == "tenant_erased"

    # API keys revoked: 401 everywhere. B is untouched.
    app = create_app(container=c)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            ha, hb = {"X-API-Key": a.api_key}, {"X-API-Key": b.api_key}
            assert (await http.get(f"/v1/jobs/{done.job.id}", headers=ha)).status_code == 401
            assert (await http.get(f"/v1/jobs/{done.job.id}/result", headers=ha)).status_code == 401
            assert (await http.post("/v1/extract", headers=ha, content=fake_pdf("x"))).status_code == 401
            r = await http.get(f"/v1/jobs/{theirs.job.id}/result", headers=hb)
            assert r.status_code == 200 and "Contrato de B" in r.json()["text"]
            assert (await http.post("/v1/extract", headers=hb, content=fake_pdf("y"))).status_code == 202
    with pytest.raises(NotFound):
        await c.tenants.create_key(a.tenant_id)
    sealed_b = await c.results.get(b.tenant_id, theirs.job.id)
    assert sealed_b is not None
    key_b = await Keyring(c.keys, c.uow, c.clock).data_key(b.tenant_id, result_key_version(sealed_b))
    assert b"Contrato de B" in open_result_part(key_b, b.tenant_id, theirs.job.id, sealed_b, "json")
    await Keyring(c.keys, c.uow, c.clock).fingerprint_key(b.tenant_id)

    # The erase is in A's audit trail; both chains are intact.
    async with c.uow(a.tenant_id) as uow:
        last = (await uow.audit.chain(a.tenant_id))[-1]
    assert last.event.action == "TENANT_ERASED"
    assert all(not rep.problems for rep in await audit.verify(c.uow))


async def test_erased_keys_stay_gone_after_a_restart(container: Container, settings: Settings) -> None:
    """A fresh process (new container, same database and master key) cannot unwrap them either."""
    a = await container.tenants.create("a")
    pa = Principal(tenant_id=a.tenant_id, api_key_id=a.key_id)
    accepted = await container.intake.submit(pa, fake_pdf("x"))
    blob = await container.blobs.get(f"{a.tenant_id}/{accepted.job.id}.enc")
    await container.tenants.erase(a.tenant_id, container.blobs, container.results)
    fresh = build(settings)
    try:
        with pytest.raises(KeyUnavailable):
            key = await fresh.keyring.data_key(a.tenant_id, 1)
            open_sealed(key, a.tenant_id, accepted.job.id, PURPOSE_DOCUMENT, blob)
    finally:
        await fresh.close()
