"""One receipt-signing key per deployment: kept in the database (wrapped) or a mounted secret, never per process."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.db.tables import service_keys
from contrackt.adapters.keys.ed25519 import raw_private, raw_public
from contrackt.adapters.keys.receipt_db import LEGACY_KEY_FILE, WRAP_CONTEXT, DatabaseReceiptSigner
from contrackt.adapters.keys.receipt_file import FileReceiptSigner
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.domain.tenants import Principal
from contrackt.services.receipts import ReceiptService, key_id_for, verify_receipt
from contrackt.settings import Settings
from tests.conftest import REPO, embedded_settings
from tests.fakes import fake_pdf
from tests.unit.lifecycle_support import process_pending


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def key_rows(c: Container) -> list[sa.Row[tuple[str, bytes, bytes]]]:
    async with c.uow(system=True) as u:
        query = sa.select(service_keys.c.name, service_keys.c.wrapped_private, service_keys.c.public_key)
        return list((await u.conn.execute(query)).all())


@pytest.fixture
async def migrated(settings: Settings) -> Settings:
    await asyncio.to_thread(upgrade, settings.db_url)
    return settings


async def test_two_containers_on_one_database_sign_with_one_key(migrated: Settings) -> None:
    first, second = build(migrated), build(migrated)
    try:
        a, b = await asyncio.gather(first.signer.public_key_raw(), second.signer.public_key_raw())
        assert a == b
        rows = await key_rows(first)
        assert [(r.name, bytes(r.public_key)) for r in rows] == [("receipt-signing", a)]
        # the private half is stored wrapped by the key provider, bound to its context
        wrapped = bytes(rows[0].wrapped_private)
        private = Ed25519PrivateKey.from_private_bytes(await first.keys.unwrap(wrapped, WRAP_CONTEXT))
        assert raw_public(private) == a and raw_private(private) not in wrapped
        # a receipt issued by one process verifies with the key the other one publishes
        key = await first.tenants.create("acme")
        principal = Principal(tenant_id=key.tenant_id, api_key_id=key.key_id)
        job = (await first.intake.submit(principal, fake_pdf("Distrato"))).job
        assert await process_pending(first) == 1
        receipt = await ReceiptService(first.uow, first.signer, first.clock, first.keyring).issue(principal, job.id)
        published = await ReceiptService(second.uow, second.signer, second.clock, second.keyring).public_key()
        verify_receipt(receipt, base64.b64decode(published["public_key"]))
    finally:
        await first.close()
        await second.close()


async def test_a_process_that_loses_the_creation_race_uses_the_winners_key(migrated: Settings) -> None:
    """Both processes find no key; both generate one; the second INSERT loses on the primary key
    and that process reads and uses the winner's key instead of its own."""
    winner, loser = build(migrated), build(migrated)
    try:
        assert isinstance(loser.signer, DatabaseReceiptSigner)
        real_row = loser.signer._row
        reads = 0

        async def row_after_the_winner_wrote() -> tuple[str, bytes, bytes] | None:
            nonlocal reads
            reads += 1
            if reads == 1:  # the loser looked before the winner had stored its key
                await winner.signer.public_key_raw()
                return None
            return await real_row()

        loser.signer._row = row_after_the_winner_wrote  # type: ignore[method-assign]
        assert await loser.signer.public_key_raw() == await winner.signer.public_key_raw()
        assert reads == 2 and len(await key_rows(winner)) == 1
    finally:
        await winner.close()
        await loser.close()


def test_two_processes_started_together_publish_the_same_key(migrated: Settings, tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from contrackt.bootstrap import build\n"
        "from contrackt.settings import Settings\n"
        "async def main():\n"
        "    c = build(Settings(home=sys.argv[1]))\n"
        "    try:\n"
        "        print((await c.signer.public_key_raw()).hex())\n"
        "    finally:\n"
        "        await c.close()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(migrated.home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode()[-2000:] for _, e in outs]
    keys = {o.decode().strip().splitlines()[-1] for o, _ in outs}  # after any log lines
    assert len(keys) == 1 and len(next(iter(keys))) == 64
    assert not (migrated.home / LEGACY_KEY_FILE).exists()


async def test_an_installations_earlier_key_file_is_adopted(migrated: Settings) -> None:
    """Receipts signed before the upgrade (per-home key file) keep verifying with the published key."""
    old = Ed25519PrivateKey.generate()
    legacy = migrated.home / LEGACY_KEY_FILE
    legacy.write_bytes(pem(old))
    legacy.chmod(0o600)
    c = build(migrated)
    try:
        assert await c.signer.public_key_raw() == raw_public(old)
    finally:
        await c.close()
    legacy.unlink()  # from now on the database holds it
    again = build(migrated)
    try:
        assert await again.signer.public_key_raw() == raw_public(old)
    finally:
        await again.close()


async def test_a_damaged_stored_key_is_refused(migrated: Settings) -> None:
    c = build(migrated)
    try:
        await c.signer.public_key_raw()
        async with c.uow(system=True) as u:  # someone swaps in another public key
            await u.conn.execute(service_keys.update().values(public_key=raw_public(Ed25519PrivateKey.generate())))
    finally:
        await c.close()
    fresh = build(migrated)
    try:
        with pytest.raises(Exception, match="does not match its public key"):
            await fresh.signer.public_key_raw()
    finally:
        await fresh.close()


@pytest.fixture
async def mounted(tmp_path: Path) -> AsyncIterator[tuple[Settings, Path, Ed25519PrivateKey]]:
    key = Ed25519PrivateKey.generate()
    secret = tmp_path / "secrets" / "receipt.pem"
    settings = embedded_settings(tmp_path / "home", receipt_key_file=secret)
    await asyncio.to_thread(upgrade, settings.db_url)
    yield settings, secret, key


async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield http


async def test_a_mounted_key_file_is_only_read(mounted: tuple[Settings, Path, Ed25519PrivateKey]) -> None:
    settings, secret, key = mounted
    # not mounted (yet): a stable 503, and no key is made up
    async for http in api(settings):
        r = await http.get("/v1/receipt-key")
        assert (r.status_code, r.json()["code"]) == (503, "receipt_key_unavailable")
        assert r.headers["content-type"] == "application/problem+json"
    assert not secret.exists() and not secret.parent.exists()
    assert not list(settings.home.glob("*receipt*"))
    # a secret others may read is refused too
    secret.parent.mkdir()
    secret.write_bytes(pem(key))
    secret.chmod(0o644)
    with pytest.raises(PermissionError):
        await FileReceiptSigner(secret).public_key_raw()
    # mounted as a Kubernetes secret would be (0440): every replica publishes that key
    secret.chmod(0o440)
    async for http in api(settings):
        published = (await http.get("/v1/receipt-key")).json()
    assert base64.b64decode(published["public_key"]) == raw_public(key)
    assert published["key_id"] == key_id_for(raw_public(key))
    assert secret.read_bytes() == pem(key)  # untouched
    c = build(settings)
    try:
        assert await key_rows(c) == []  # nothing went into the database
    finally:
        await c.close()


async def test_production_never_writes_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default in production is the database key: no process writes a key of its own."""
    monkeypatch.setenv("CONTRACKT_ALLOW_LOCAL_KEYS", "1")  # a master key is needed; KMS is tested elsewhere
    home = tmp_path / "home"
    settings = Settings(env="production", home=home)
    await asyncio.to_thread(upgrade, settings.db_url)
    before = {p.name for p in home.iterdir()}
    c = build(settings)
    try:
        assert isinstance(c.signer, DatabaseReceiptSigner)
        signature = await c.signer.sign(b"receipt")
        assert len(signature) == 64
    finally:
        await c.close()
    created = {p.name for p in home.iterdir()} - before
    # the master key (allowed by the override above) and the default blob directory; no signing key
    assert created <= {"master.key", "blobs", "contrackt.db-wal", "contrackt.db-shm"}, created
    assert not (home / LEGACY_KEY_FILE).exists()
