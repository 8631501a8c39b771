"""Audit trail: the lifecycle of a job, no personal data, append-only rows, tamper evidence."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.bootstrap import Container, build
from contrackt.domain.audit import ALLOWED_DETAIL_KEYS, AuditAction
from contrackt.services import audit
from contrackt.settings import Settings
from tests.conftest import embedded_settings
from tests.fakes import fake_pdf
from tests.unit.lifecycle_support import (
    auth,
    invoke_cli,
    job_chain,
    new_tenant,
    raw_db,
    wait_done,
    wait_purged,
)

CANARY = "CANARIO-AUDIT-7f3e9b"
FILE_NAME = f"contrato-{CANARY}-joao-da-silva.pdf"

# The fields each action may carry (besides tenant, job, api key, fingerprint).
EXPECTED_DETAILS = {
    AuditAction.RECEIVED: {"size_bytes", "key_version", "media_type"},
    AuditAction.PROCESSING: {"attempt"},
    AuditAction.COMPLETED: {"page_count", "duration_ms", "result_sha256", "outcome", "key_version", "engine", "parts"},
    AuditAction.PURGED: {"what"},
    AuditAction.DELIVERED: {"result_sha256"},
}


async def test_job_lifecycle_is_recorded_in_order_without_personal_data(
    client: httpx.AsyncClient, container: Container, settings: Settings
) -> None:
    t = await new_tenant(container)
    pdf = fake_pdf(f"Contrato {CANARY}\nCPF 529.982.247-25")
    accepted = await client.post("/v1/extract", headers=auth(t), files={"file": (FILE_NAME, pdf, "application/pdf")})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert (await wait_done(client, job_id, auth(t)))["status"] == "completed"
    await wait_purged(container, t["tenant_id"], job_id)
    result = await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))
    assert result.status_code == 200

    rows = await job_chain(container, t["tenant_id"], job_id)
    actions = [r.event.action for r in rows]
    assert actions == [
        AuditAction.RECEIVED,
        AuditAction.PROCESSING,
        AuditAction.COMPLETED,
        AuditAction.PURGED,
        AuditAction.DELIVERED,
    ]
    seqs = [r.seq for r in rows]
    assert seqs == sorted(seqs)
    for row in rows:
        ev = row.event
        assert set(ev.details) == EXPECTED_DETAILS[ev.action], ev.action
        assert set(ev.details) <= ALLOWED_DETAIL_KEYS
        assert ev.tenant_id == t["tenant_id"]
        assert ev.fingerprint is not None and len(ev.fingerprint) == 64
        # the keyed fingerprint, never the plain SHA-256 the client was given
        assert ev.fingerprint != accepted.json()["document_sha256"]
    assert rows[3].event.details["what"] == "document"
    # the sniffed type, never the client's claim or the file name
    assert rows[0].event.details["media_type"] == "application/pdf"
    assert rows[2].event.details["result_sha256"] == result.json()["result_sha256"]
    assert rows[4].event.details["result_sha256"] == result.json()["result_sha256"]
    assert rows[0].event.api_key_id == rows[4].event.api_key_id == t["key_id"]

    # Nothing of the upload's name or text in any audit column, in the database itself.
    with raw_db(settings) as db:
        dump = json.dumps(db.execute("SELECT * FROM audit_logs").fetchall(), default=str)
    for secret in (CANARY, FILE_NAME, "529.982.247-25", "52998224725", "joao"):
        assert secret not in dump
    assert all(rep.problems == [] for rep in await audit.verify(container.uow))


async def test_audit_rows_cannot_be_updated_or_deleted_on_sqlite(container: Container, settings: Settings) -> None:
    t = await new_tenant(container)
    async with container.uow(t["tenant_id"]) as uow:
        await audit.record(uow, container.clock, t["tenant_id"], AuditAction.TENANT_ERASED, what="tenant")
    with raw_db(settings) as db:
        for sql in (
            "UPDATE audit_logs SET action = 'FAILED'",
            "UPDATE audit_logs SET details = '{}'",
            "DELETE FROM audit_logs",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
        assert db.execute("SELECT count(*) FROM audit_logs").fetchone() == (1,)
    # through the application's own engine as well
    import sqlalchemy as sa

    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        async with container.uow(t["tenant_id"]) as uow:
            await uow.conn.execute(sa.text("DELETE FROM audit_logs"))


# --- tampering, detected by `contrackt audit verify` -----------------------------------------


def _populate(home: Path) -> tuple[Settings, str]:
    """A tenant with a six-row chain (and a second, untouched tenant)."""
    settings = embedded_settings(home)

    async def run() -> str:
        await asyncio.to_thread(upgrade, settings.db_url)
        c = build(settings)
        try:
            tenant = (await c.tenants.create("victim")).tenant_id
            bystander = (await c.tenants.create("bystander")).tenant_id
            for tid in (tenant, bystander):
                async with c.uow(tid) as uow:
                    job = "00000000-0000-4000-8000-00000000000" + ("1" if tid == tenant else "2")
                    rec = audit.record
                    await rec(uow, c.clock, tid, AuditAction.RECEIVED, job_id=job, size_bytes=10, key_version=1)
                    await rec(uow, c.clock, tid, AuditAction.PROCESSING, job_id=job, attempt=1)
                    await rec(uow, c.clock, tid, AuditAction.COMPLETED, job_id=job, page_count=2, outcome="completed")
                    await rec(uow, c.clock, tid, AuditAction.PURGED, job_id=job, what="document")
                    await rec(uow, c.clock, tid, AuditAction.DELIVERED, job_id=job)
                    await rec(uow, c.clock, tid, AuditAction.PURGED, job_id=job, what="result")
            return tenant
        finally:
            await c.close()

    return settings, asyncio.run(run())


def _untriggered(settings: Settings) -> sqlite3.Connection:
    db = raw_db(settings)
    db.execute("DROP TRIGGER audit_logs_no_update")
    db.execute("DROP TRIGGER audit_logs_no_delete")
    return db


def _row_id(db: sqlite3.Connection, tenant: str, seq: int) -> int:
    # the UUID type stores 32 hex digits on SQLite
    row = db.execute(
        "SELECT id FROM audit_logs WHERE replace(tenant_id, '-', '') = ? AND seq = ?", (tenant.replace("-", ""), seq)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_intact_chains_verify(tmp_path: Path) -> None:
    settings, tenant = _populate(tmp_path / "home")
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.count("\tok") == 2
    one = invoke_cli(settings.home, "audit", "verify", "--tenant", tenant)
    assert one.exit_code == 0 and "6 rows\tok" in one.output


def test_changed_row_is_reported(tmp_path: Path) -> None:
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        db.execute(
            "UPDATE audit_logs SET details = ? WHERE id = ?",
            (json.dumps({"page_count": 1, "outcome": "completed"}), _row_id(db, tenant, 3)),
        )
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 1
    assert f"{tenant}\t6 rows\tTAMPERED" in result.output
    assert "seq 3: row content does not match its hash (row changed)" in result.output
    assert result.output.count("TAMPERED") == 1  # the other tenant's chain is intact


def test_changed_action_is_reported(tmp_path: Path) -> None:
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        db.execute("UPDATE audit_logs SET action = 'FAILED' WHERE id = ?", (_row_id(db, tenant, 3),))
    result = invoke_cli(settings.home, "audit", "verify", "--tenant", tenant)
    assert result.exit_code == 1
    assert "seq 3: row content does not match its hash" in result.output


def test_deleted_row_is_reported(tmp_path: Path) -> None:
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        db.execute("DELETE FROM audit_logs WHERE id = ?", (_row_id(db, tenant, 4),))
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 1
    assert f"{tenant}\t5 rows\tTAMPERED" in result.output
    assert "seq 5: expected seq 4 (row removed or reordered)" in result.output
    assert "seq 5: prev_hash does not link to the previous row" in result.output


def test_deleted_row_with_renumbering_is_reported(tmp_path: Path) -> None:
    """Closing the gap in seq does not help: the hashes cover seq and link the rows."""
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        db.execute("DELETE FROM audit_logs WHERE id = ?", (_row_id(db, tenant, 2),))
        for seq in range(3, 7):
            db.execute("UPDATE audit_logs SET seq = ? WHERE id = ?", (seq - 1, _row_id(db, tenant, seq)))
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 1
    assert "seq 2: prev_hash does not link" in result.output


def test_swapped_seq_is_reported(tmp_path: Path) -> None:
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        a, b = _row_id(db, tenant, 2), _row_id(db, tenant, 3)
        db.execute("UPDATE audit_logs SET seq = -1 WHERE id = ?", (a,))
        db.execute("UPDATE audit_logs SET seq = 2 WHERE id = ?", (b,))
        db.execute("UPDATE audit_logs SET seq = 3 WHERE id = ?", (a,))
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 1
    assert "TAMPERED" in result.output
    assert "seq 3: expected seq 2 (row removed or reordered)" in result.output


def test_swapped_rows_are_reported(tmp_path: Path) -> None:
    """Swapping the rows' whole positions (ids) reorders the chain: detected too."""
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        a, b = _row_id(db, tenant, 2), _row_id(db, tenant, 3)
        db.execute("UPDATE audit_logs SET id = -1 WHERE id = ?", (a,))
        db.execute("UPDATE audit_logs SET id = ? WHERE id = ?", (a, b))
        db.execute("UPDATE audit_logs SET id = ? WHERE id = -1", (b,))
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 1
    assert "seq 3: expected seq 2" in result.output


def test_rows_deleted_from_the_end_are_reported(tmp_path: Path) -> None:
    """The tenant row records the chain's head, moved in the same transaction as each append."""
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        for seq in (5, 6):
            db.execute("DELETE FROM audit_logs WHERE id = ?", (_row_id(db, tenant, seq),))
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 1
    assert f"{tenant}\t4 rows\tTAMPERED" in result.output
    assert "chain ends at seq 4 but its recorded head is seq 6 (rows removed at the end)" in result.output


def test_a_chain_deleted_entirely_is_reported(tmp_path: Path) -> None:
    settings, tenant = _populate(tmp_path / "home")
    with _untriggered(settings) as db:
        db.execute("DELETE FROM audit_logs WHERE replace(tenant_id, '-', '') = ?", (tenant.replace("-", ""),))
    result = invoke_cli(settings.home, "audit", "verify")
    assert result.exit_code == 1
    assert f"{tenant}\t0 rows\tTAMPERED" in result.output
