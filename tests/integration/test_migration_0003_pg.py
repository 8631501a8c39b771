"""Revision 0003 on a PostgreSQL database made before it: `contrackt migrate` adds the columns, the
checkpoint table (owned by the owner role, append-only for the service) and the pruning function."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command

from contrackt.adapters.db import postgres_admin
from contrackt.adapters.db.migrate import alembic_config
from tests.contract.services import FreshPostgres

pytestmark = pytest.mark.integration


async def test_migrate_brings_a_0002_database_to_0003() -> None:
    pg = FreshPostgres()
    try:
        p = postgres_admin.plan(pg.settings())
        await postgres_admin.ensure_roles_and_database(p)
        await postgres_admin.prepare_schema(p)
        await asyncio.to_thread(command.upgrade, alembic_config(p.target_admin_sqlalchemy_url), "0002")
        admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))
        try:  # 0001 builds tables from today's definitions: take away what 0003 adds
            for stmt in (
                "DROP TABLE audit_checkpoints",
                "DROP INDEX ix_jobs_hold",
                "DROP INDEX ix_jobs_completed",
                "DROP INDEX ix_audit_at",
                "ALTER TABLE jobs DROP COLUMN document_hold_until, DROP COLUMN attempt_limit",
                "DROP FUNCTION IF EXISTS contrackt_audit_prune(uuid, bigint)",
            ):
                await admin.execute(stmt)
        finally:
            await admin.close()
        await asyncio.to_thread(pg.migrate)
        admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))
        try:
            assert await admin.fetchval("SELECT version_num FROM alembic_version") == "0006"
            columns = {
                r["column_name"]
                for r in await admin.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'"
                )
            }
            assert {"document_hold_until", "attempt_limit"} <= columns
            owner = await admin.fetchval(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'audit_checkpoints'"
            )
            assert owner == pg.owner_role
            assert await admin.fetchval(
                "SELECT has_function_privilege($1, 'contrackt_audit_prune(uuid, bigint)', 'EXECUTE')", pg.service_role
            )
            assert not await admin.fetchval(
                "SELECT has_table_privilege($1, 'audit_checkpoints', 'DELETE')", pg.service_role
            )
            triggers = {r["tgname"] for r in await admin.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
            assert {
                "audit_logs_append_only",
                "audit_checkpoints_append_only",
                "audit_checkpoints_no_truncate",
            } <= triggers
        finally:
            await admin.close()
    finally:
        await pg.drop()
