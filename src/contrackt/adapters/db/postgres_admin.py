"""``contrackt migrate`` on PostgreSQL: roles, database, schema, row-level security, grants.

Runs with ``CONTRACKT_DATABASE_ADMIN_URL`` (a superuser, or a role with
CREATEROLE + CREATEDB that can grant to the roles below). Idempotent: every
step checks or uses IF NOT EXISTS / OR REPLACE, so it may run on every deploy.

Roles:
* the *service role*, user and password from ``CONTRACKT_DATABASE_URL``: LOGIN,
  NOSUPERUSER, NOBYPASSRLS, NOCREATEDB, NOCREATEROLE, owns nothing;
* the *owner role* (``{service}_owner`` unless given): NOLOGIN, owns the tables,
  sequences and the audit trigger function. Nobody logs in as it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.db.postgres_security import (
    AUDIT_GUARD,
    grant_statements,
    policy_statements,
    retention_statements,
)
from contrackt.settings import Settings

log = structlog.get_logger("contrackt.migrate")


@dataclass(frozen=True)
class Plan:
    admin_dsn: str  # plain postgresql:// DSN for asyncpg, admin's own database
    target_admin_dsn: str  # admin credentials, service database
    target_admin_sqlalchemy_url: str  # the same for Alembic (postgresql+asyncpg://)
    database: str
    service_role: str
    service_password: str | None
    owner_role: str
    audit_retention_days: int = 1826  # the pruning function's floor (CONTRACKT_AUDIT_RETENTION_DAYS)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def plan(settings: Settings, owner_role: str | None = None) -> Plan:
    if settings.database_admin_url is None:
        raise ValueError("CONTRACKT_DATABASE_ADMIN_URL is required to migrate PostgreSQL")
    if not settings.db_url.startswith("postgresql"):
        raise ValueError("CONTRACKT_DATABASE_URL must be a postgresql:// URL")
    admin = make_url(settings.database_admin_url.get_secret_value())
    service = make_url(settings.db_url)
    if not service.username or not service.database:
        raise ValueError("CONTRACKT_DATABASE_URL must name the service user and the database")
    if admin.username == service.username:
        raise ValueError("the service role must not be the admin role (it would bypass row-level security)")
    target_admin = admin.set(database=service.database)
    return Plan(
        admin_dsn=_asyncpg_dsn(admin.render_as_string(hide_password=False)),
        target_admin_dsn=_asyncpg_dsn(target_admin.render_as_string(hide_password=False)),
        target_admin_sqlalchemy_url=target_admin.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False
        ),
        database=service.database,
        service_role=service.username,
        service_password=service.password,
        owner_role=owner_role or f"{service.username}_owner",
        audit_retention_days=settings.audit_retention_days,
    )


async def _ident(conn: asyncpg.Connection, name: str) -> str:
    quoted: str = await conn.fetchval("SELECT quote_ident($1)", name)
    return quoted


async def _literal(conn: asyncpg.Connection, value: str) -> str:
    quoted: str = await conn.fetchval("SELECT quote_literal($1)", value)
    return quoted


async def ensure_roles_and_database(p: Plan) -> None:
    conn = await asyncpg.connect(p.admin_dsn)
    try:
        owner = await _ident(conn, p.owner_role)
        svc = await _ident(conn, p.service_role)
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", p.owner_role):
            await conn.execute(f"CREATE ROLE {owner} NOLOGIN")
            log.info("migrate.role.created", role=p.owner_role)
        await conn.execute(f"ALTER ROLE {owner} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", p.service_role):
            await conn.execute(f"CREATE ROLE {svc} LOGIN")
            log.info("migrate.role.created", role=p.service_role)
        await conn.execute(
            f"ALTER ROLE {svc} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT"
        )
        if p.service_password:
            await conn.execute(f"ALTER ROLE {svc} PASSWORD {await _literal(conn, p.service_password)}")
        # The service role must not be able to act as the owner.
        if await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", p.service_role, p.owner_role):
            await conn.execute(f"REVOKE {owner} FROM {svc}")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", p.database):
            # CREATE DATABASE cannot run in a transaction; asyncpg runs it in autocommit.
            await conn.execute(f"CREATE DATABASE {await _ident(conn, p.database)} OWNER {owner}")
            log.info("migrate.database.created", database=p.database)
        db = await _ident(conn, p.database)
        await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
        await conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {svc}")
    finally:
        await conn.close()


async def prepare_schema(p: Plan) -> None:
    conn = await asyncpg.connect(p.target_admin_dsn)
    try:
        owner = await _ident(conn, p.owner_role)
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {owner}")
    finally:
        await conn.close()


async def secure_schema(p: Plan) -> None:
    """After Alembic: policies again (idempotent), owner, grants. One transaction."""
    conn = await asyncpg.connect(p.target_admin_dsn)
    try:
        async with conn.transaction():
            for stmt in (*AUDIT_GUARD, *policy_statements(), *retention_statements(p.audit_retention_days)):
                await conn.execute(stmt)
            tables = [
                r["relname"]
                for r in await conn.fetch(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1"
                )
            ]
            # Sequences owned by a column follow their table (ALTER TABLE OWNER recurses);
            # only free-standing ones are listed for ALTER SEQUENCE.
            sequences = [
                r["relname"]
                for r in await conn.fetch(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1"
                )
            ]
            for stmt in grant_statements(p.service_role, p.owner_role, tables, sequences):
                await conn.execute(stmt)
            # Nothing the migration did may leave the service role owning an object.
            await conn.execute(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {await _ident(conn, p.owner_role)} IN SCHEMA public "
                f"REVOKE ALL ON TABLES FROM PUBLIC"
            )
    finally:
        await conn.close()


async def _before(p: Plan) -> None:
    await ensure_roles_and_database(p)
    await prepare_schema(p)


def migrate(settings: Settings, *, owner_role: str | None = None) -> None:
    """Create roles and database if missing, upgrade the schema, apply RLS and grants.

    Synchronous (it is a CLI command): call it from a thread when an event loop runs.
    """
    p = plan(settings, owner_role)
    asyncio.run(_before(p))
    # Alembic runs with the admin's credentials (its env.py opens its own engine);
    # ownership moves to the owner role right after, in secure_schema.
    upgrade(p.target_admin_sqlalchemy_url)
    asyncio.run(secure_schema(p))
    log.info("migrate.done", database=p.database, service_role=p.service_role, owner_role=p.owner_role)
