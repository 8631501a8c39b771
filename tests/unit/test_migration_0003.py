"""Revision 0003 on a database made before it (SQLite): it adds what is missing, old jobs keep
their attempts budget, and the trail is append-only with the gated pruning path."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.exc import DBAPIError

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.migrate import alembic_config, upgrade
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.domain.audit import AuditAction
from contrackt.domain.jobs import MAX_ATTEMPTS
from contrackt.ports.clock import SystemClock
from contrackt.services import audit

TENANT = "6f1c2f8e-58a4-4b38-9d7e-0d2b9d7c1a11"
JOB = "0b9e3a52-7a44-4c69-b1a9-2f3f8e8b6c10"


def as_before_0003(path: Path) -> None:
    """Take away what 0003 adds (0001 builds tables from today's definitions), as an old database."""
    db = sqlite3.connect(path)
    with db:
        for index in ("ix_jobs_hold", "ix_jobs_completed", "ix_audit_at"):
            db.execute(f"DROP INDEX {index}")
        db.execute("DROP TABLE audit_checkpoints")
        db.execute("ALTER TABLE jobs DROP COLUMN document_hold_until")
        db.execute("ALTER TABLE jobs DROP COLUMN attempt_limit")
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        db.execute(
            "INSERT INTO tenants (id, name, created_at, delete_on_read, audit_seq) VALUES (?, 'old', ?, 0, 0)",
            (TENANT.replace("-", ""), now),
        )
        db.execute(
            "INSERT INTO jobs (id, tenant_id, status, created_at, attempts, key_version, size_bytes, mode, "
            "delete_on_read, pages_done) VALUES (?, ?, 'processing', ?, 2, 1, 0, 'auto', 0, 0)",
            (JOB.replace("-", ""), TENANT.replace("-", ""), now),
        )
    db.close()


async def test_0003_upgrades_a_database_made_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0002")
    await asyncio.to_thread(as_before_0003, path)
    await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(upgrade, url)  # twice: idempotent
    db = sqlite3.connect(path)
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    triggers = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    db.close()
    assert {"document_hold_until", "attempt_limit"} <= columns
    assert {"audit_logs_no_delete", "audit_checkpoints_no_delete", "audit_prune_gate_needs_checkpoint"} <= triggers
    uow = SqlUnitOfWorkFactory(make_engine(url))
    try:
        async with uow(TENANT) as u:
            job = await u.jobs.get(TENANT, JOB)
            await audit.record(u, SystemClock(), TENANT, AuditAction.RECEIVED, job_id=JOB)
        assert job is not None and (job.attempts, job.attempt_limit, job.document_hold_until) == (2, MAX_ATTEMPTS, None)
        with pytest.raises(DBAPIError, match="append-only"):
            async with uow(TENANT) as u:
                await u.conn.exec_driver_sql("DELETE FROM audit_logs")
        with pytest.raises(DBAPIError, match="no checkpoint at the cut"):
            async with uow(TENANT) as u:
                await u.audit.prune(TENANT, 1, datetime.now(UTC) + timedelta(days=1))
    finally:
        await uow.close()
