"""Where the real backends are: ``.test-services/env``, written by scripts/services.sh.

A missing file or an unreachable service FAILS the test loudly (CI runs
scripts/services.sh first); these tests are never skipped silently.
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV_FILE = REPO / ".test-services" / "env"


@cache
def _env() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                values[k.strip()] = v.strip()
    return values


def service(name: str) -> str:
    """The endpoint ``CONTRACKT_TEST_{name}``; fails the test when unknown or unreachable."""
    key = f"CONTRACKT_TEST_{name}"
    value = os.environ.get(key) or _env().get(key)
    if not value:
        pytest.fail(
            f"{key} is not set and {ENV_FILE} does not name it: run scripts/services.sh before the "
            "contract/integration tests",
            pytrace=False,
        )
    host, port = _host_port(value)
    if host not in ("127.0.0.1", "::1", "localhost"):
        pytest.fail(f"{key}={value}: tests only talk to loopback services", pytrace=False)
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as exc:
        pytest.fail(f"{key}={value} is not reachable ({exc}): run scripts/services.sh", pytrace=False)
    return value


def _host_port(value: str) -> tuple[str, int]:
    if "://" not in value:
        value = "tcp://" + value
    u = urlparse(value)
    defaults = {"postgresql": 5432, "postgresql+asyncpg": 5432, "redis": 6379, "http": 80, "tcp": 9092}
    return u.hostname or "127.0.0.1", u.port or defaults.get(u.scheme, 0)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class FreshPostgres:
    """A new database + service/owner roles with random names, migrated by ``postgres_admin``."""

    def __init__(self) -> None:
        from sqlalchemy.engine import make_url

        admin = make_url(service("PG_ADMIN"))
        suffix = uuid.uuid4().hex[:10]
        self.database = f"ctk_test_{suffix}"
        self.service_role = f"ctk_svc_{suffix}"
        self.owner_role = f"{self.service_role}_owner"
        self.password = f"pw-{uuid.uuid4().hex}"
        self.admin_url = admin.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        self.service_url = admin.set(
            drivername="postgresql+asyncpg",
            username=self.service_role,
            password=self.password,
            database=self.database,
        ).render_as_string(hide_password=False)
        self.admin_target_url = admin.set(drivername="postgresql+asyncpg", database=self.database).render_as_string(
            hide_password=False
        )

    def dsn(self, url: str) -> str:
        """asyncpg DSN for a SQLAlchemy URL."""
        return url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def settings(self, **extra: object):  # type: ignore[no-untyped-def]
        from contrackt.settings import Settings

        return Settings(database_url=self.service_url, database_admin_url=self.admin_url, **extra)  # type: ignore[arg-type]

    def migrate(self) -> None:
        from contrackt.adapters.db.postgres_admin import migrate

        migrate(self.settings())

    async def drop(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn(self.admin_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            for role in (self.service_role, self.owner_role):
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await conn.close()


async def drop_redis_queue(redis_url: str, stream: str) -> None:
    """Delete every key of the queue named ``stream`` (they share its hash tag), and nothing else."""
    from redis.asyncio import Redis

    r = Redis.from_url(redis_url)
    try:
        keys = [k async for k in r.scan_iter(match="{" + stream + "}:*", count=500)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()
