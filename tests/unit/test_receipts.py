"""Deletion receipts: issued only after the document is destroyed, signed, verifiable offline."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.keys.ed25519 import Ed25519Signer
from contrackt.bootstrap import Container, build
from contrackt.domain.tenants import Principal
from contrackt.services.purge import SweepReport
from contrackt.services.receipts import (
    RECEIPT_FIELDS,
    RECEIPT_FIELDS_V1,
    RECEIPT_TYPE,
    RECEIPT_TYPE_V1,
    NotPurged,
    ReceiptInvalid,
    ReceiptService,
    canonical_bytes,
    key_id_for,
    parse_public_key,
    verify_receipt,
)
from contrackt.settings import Settings
from tests.conftest import embedded_settings
from tests.fakes import fake_pdf
from tests.unit.lifecycle_support import auth, eventually, invoke_cli, new_tenant, process_pending, wait_done


async def test_receipt_is_409_until_purged_then_signed(
    client: httpx.AsyncClient, container: Container, settings: Settings
) -> None:
    t = await new_tenant(container)
    pdf = fake_pdf("a%PAGEb", "slow")
    accepted = (await client.post("/v1/extract", headers=auth(t), content=pdf)).json()
    job_id = accepted["job_id"]
    early = await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))
    assert (early.status_code, early.json()["code"]) == (409, "not_purged")
    assert early.headers["content-type"] == "application/problem+json"

    await wait_done(client, job_id, auth(t))

    async def fetch() -> dict[str, Any] | None:
        r = await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))
        assert r.status_code in (200, 409), r.text
        return r.json() if r.status_code == 200 else None

    receipt: dict[str, Any] = await eventually(fetch)
    result = (await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).json()

    assert set(receipt) == {*RECEIPT_FIELDS, "signature"}
    assert receipt["type"] == RECEIPT_TYPE == "contrackt.deletion-receipt.v2"
    assert receipt["job_id"] == job_id and receipt["tenant_id"] == t["tenant_id"]
    assert receipt["destroyed"] == ["document"]
    assert receipt["result_sha256"] == result["result_sha256"]
    # the client ties the receipt to its own file
    assert receipt["document_sha256"] == accepted["document_sha256"] == hashlib.sha256(pdf).hexdigest()
    async with container.uow(t["tenant_id"]) as uow:
        job = await uow.jobs.get(t["tenant_id"], job_id)
    assert job is not None and job.purged_at is not None and job.completed_at is not None
    assert receipt["fingerprint"] == job.fingerprint  # keyed: not the plain SHA-256
    assert receipt["fingerprint"] != accepted["document_sha256"]
    assert receipt["received_at"] == job.created_at.isoformat()
    assert receipt["completed_at"] == job.completed_at.isoformat()
    assert receipt["purged_at"] == job.purged_at.isoformat()
    assert receipt["received_at"] <= receipt["completed_at"] <= receipt["purged_at"] <= receipt["issued_at"]

    # no key file anywhere: the key lives in the database, wrapped by the master key
    assert sorted(p.name for p in settings.home.glob("*.key")) == ["master.key"]
    published = (await client.get("/v1/receipt-key")).json()  # no API key needed
    assert published["algorithm"] == "Ed25519"
    assert published["key_id"] == receipt["key_id"]
    raw = parse_public_key(published["public_key_pem"].encode())
    assert raw == base64.b64decode(published["public_key"]) and key_id_for(raw) == receipt["key_id"]
    verify_receipt(receipt, raw)

    # after DELETE the result is destroyed as well, and a new receipt says so
    assert (await client.delete(f"/v1/jobs/{job_id}", headers=auth(t))).status_code == 200
    later = (await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))).json()
    assert later["destroyed"] == ["document", "result"]
    verify_receipt(later, raw)


async def test_another_tenants_receipt_is_404(client: httpx.AsyncClient, container: Container) -> None:
    a, b = await new_tenant(container, "a"), await new_tenant(container, "b")
    job_id = (await client.post("/v1/extract", headers=auth(a), content=fake_pdf("segredo"))).json()["job_id"]
    await wait_done(client, job_id, auth(a))
    theirs = await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(b))
    nobody = await client.get("/v1/jobs/00000000-0000-4000-8000-000000000000/receipt", headers=auth(b))
    garbage = await client.get("/v1/jobs/not-a-uuid/receipt", headers=auth(b))
    assert theirs.status_code == nobody.status_code == garbage.status_code == 404
    assert theirs.json() == nobody.json()
    assert (await client.get(f"/v1/jobs/{job_id}/receipt")).status_code == 401


async def test_tampered_or_foreign_receipts_fail_verification() -> None:
    signer = Ed25519Signer(Ed25519PrivateKey.generate())
    public = await signer.public_key_raw()
    receipt: dict[str, Any] = {f: None for f in RECEIPT_FIELDS}
    receipt.update(type=RECEIPT_TYPE, destroyed=["document"], key_id=key_id_for(public))
    receipt["signature"] = base64.b64encode(await signer.sign(canonical_bytes(receipt))).decode()
    verify_receipt(receipt, public)

    for field, value in (
        ("destroyed", ["document", "result"]),
        ("purged_at", "2020-01-01T00:00:00+00:00"),
        ("document_sha256", "0" * 64),
    ):
        with pytest.raises(ReceiptInvalid, match="signature does not match"):
            verify_receipt({**receipt, field: value}, public)
    with pytest.raises(ReceiptInvalid, match="unexpected fields"):
        verify_receipt({**receipt, "note": "x"}, public)
    with pytest.raises(ReceiptInvalid, match="missing fields: job_id"):
        verify_receipt({k: v for k, v in receipt.items() if k != "job_id"}, public)
    with pytest.raises(ReceiptInvalid, match="missing fields: document_sha256"):
        verify_receipt({k: v for k, v in receipt.items() if k != "document_sha256"}, public)
    with pytest.raises(ReceiptInvalid, match="not a Contrackt deletion receipt"):
        verify_receipt({**receipt, "type": "contrackt.deletion-receipt.v9"}, public)
    other = Ed25519Signer(Ed25519PrivateKey.generate())
    other_public = await other.public_key_raw()
    with pytest.raises(ReceiptInvalid, match="signed by another key"):
        verify_receipt(receipt, other_public)
    # a forger who also swaps key_id still fails: the signature is not theirs
    with pytest.raises(ReceiptInvalid, match="signature does not match"):
        verify_receipt({**receipt, "key_id": key_id_for(other_public)}, other_public)


async def test_v1_receipts_issued_before_v2_still_verify() -> None:
    """A receipt from before receipts named the document's hash: its own field set, still valid."""
    signer = Ed25519Signer(Ed25519PrivateKey.generate())
    public = await signer.public_key_raw()
    v1: dict[str, Any] = {f: None for f in RECEIPT_FIELDS_V1}
    v1.update(type=RECEIPT_TYPE_V1, destroyed=["document", "result"], key_id=key_id_for(public))
    v1["signature"] = base64.b64encode(await signer.sign(canonical_bytes(v1))).decode()
    verify_receipt(v1, public)
    # ...and a v1 receipt cannot smuggle in v2's field, nor a v2 go without it
    with pytest.raises(ReceiptInvalid, match="unexpected fields: document_sha256"):
        verify_receipt({**v1, "document_sha256": "0" * 64}, public)
    with pytest.raises(ReceiptInvalid, match="missing fields: document_sha256"):
        verify_receipt({**v1, "type": RECEIPT_TYPE}, public)


# --- `contrackt receipt verify`, offline -------------------------------------------------------


def _issue_receipt(home: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A real receipt from an embedded stack (worker steps run by hand) and the published key."""
    settings = embedded_settings(home)

    async def run() -> tuple[dict[str, Any], dict[str, str]]:
        await asyncio.to_thread(upgrade, settings.db_url)
        c = build(settings)
        try:
            key = await c.tenants.create("acme")
            principal = Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)
            accepted = await c.intake.submit(principal, fake_pdf("Recibo de quitação"))
            assert await process_pending(c) == 1
            service = ReceiptService(c.uow, c.signer, c.clock, c.keyring)
            return await service.issue(principal, accepted.job.id), await service.public_key()
        finally:
            await c.close()

    return asyncio.run(run())


def test_cli_verifies_offline(tmp_path: Path) -> None:
    home = tmp_path / "home"
    receipt, published = _issue_receipt(home)
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps(receipt, indent=2))
    pem = tmp_path / "receipt-key.pem"
    pem.write_text(published["public_key_pem"])
    as_json = tmp_path / "receipt-key.json"
    as_json.write_text(json.dumps(published))
    as_b64 = tmp_path / "receipt-key.b64"
    as_b64.write_text(published["public_key"] + "\n")
    elsewhere = tmp_path / "elsewhere"  # a verifier with no Contrackt installation of its own

    for key_file in (pem, as_json, as_b64):
        ok = invoke_cli(elsewhere, "receipt", "verify", str(receipt_file), "--public-key", str(key_file))
        assert (ok.exit_code, ok.output.strip()) == (0, "valid"), ok.output
    assert not elsewhere.exists()
    # default: this installation's own key, read from its database
    local = invoke_cli(home, "receipt", "verify", str(receipt_file))
    assert (local.exit_code, local.output.strip()) == (0, "valid")

    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**receipt, "destroyed": ["document", "result"]}))
    bad = invoke_cli(elsewhere, "receipt", "verify", str(tampered), "--public-key", str(pem))
    assert bad.exit_code == 1
    assert "signature does not match" in bad.output

    no_key = invoke_cli(elsewhere, "receipt", "verify", str(receipt_file))
    assert no_key.exit_code == 1 and "no public key" in no_key.output
    not_json = tmp_path / "junk.json"
    not_json.write_text("{nope")
    junk = invoke_cli(elsewhere, "receipt", "verify", str(not_json), "--public-key", str(pem))
    assert junk.exit_code == 1 and "not JSON" in junk.output


async def test_a_dead_workers_leftover_document_gets_its_receipt_from_the_sweeper(container: Container) -> None:
    """The worker died after completing the job and before destroying the upload: the sweeper
    destroys it and records it, so the job's receipt becomes available and says so."""
    c = container
    key = await c.tenants.create("acme")
    principal = Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)
    job = (await c.intake.submit(principal, fake_pdf("Escritura"))).job
    assert job.blob_key is not None
    now = c.clock.now()
    async with c.uow(key.tenant_id) as u:
        claimed = await u.jobs.claim(job.id, now, now)
        assert claimed is not None
        assert await u.jobs.finish(job.id, claimed.attempts, completed=True, now=now, result_expires_at=now)
    service = ReceiptService(c.uow, c.signer, c.clock, c.keyring)
    with pytest.raises(NotPurged):
        await service.issue(principal, job.id)
    report = SweepReport()
    await c.sweeper.delete_orphans(report)
    assert report.orphan_blobs_deleted == 1 and not await c.blobs.exists(job.blob_key)
    receipt = await service.issue(principal, job.id)
    assert receipt["destroyed"] == ["document"]
    verify_receipt(receipt, await c.signer.public_key_raw())
    async with c.uow(key.tenant_id) as u:
        rows = [r.event for r in await u.audit.chain(key.tenant_id) if r.event.action == "PURGED"]
    assert [(r.details["what"], r.details["reason"]) for r in rows] == [("document", "sweeper")]
