"""`contrackt migrate` as an operator runs it: PostgreSQL roles and schema, S3 bucket and lifecycle rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aioboto3
import asyncpg
import pytest

from tests.contract.services import FreshPostgres, service, unique

BIN = Path(sys.executable).parent / "contrackt"


async def test_migrate_creates_roles_schema_and_bucket(tmp_path: Path) -> None:
    s3 = service("S3")
    pg = FreshPostgres()
    bucket = unique("ctk-migrate-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(
        CONTRACKT_HOME=str(tmp_path / "home"),
        CONTRACKT_DATABASE_URL=pg.service_url,
        CONTRACKT_DATABASE_ADMIN_URL=pg.admin_url,
        CONTRACKT_STORAGE_URL=f"s3://{bucket}/docs",
        CONTRACKT_S3_ENDPOINT_URL=s3,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        for _ in range(2):  # idempotent
            out = subprocess.run([str(BIN), "migrate"], env=env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            assert "bucket and lifecycle rule are in place" in out.stdout
        conn = await asyncpg.connect(pg.dsn(pg.service_url))
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            tables = {r["tablename"] for r in rows}
        finally:
            await conn.close()
        assert {"tenants", "jobs", "audit_logs", "outbox", "api_keys"} <= tables
        session = aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        async with session.client("s3", endpoint_url=s3, region_name="us-east-1") as client:
            rules = (await client.get_bucket_lifecycle_configuration(Bucket=bucket))["Rules"]
            assert any(r.get("Expiration", {}).get("Days") == 1 for r in rules)
            await client.delete_bucket(Bucket=bucket)
    finally:
        await pg.drop()


def test_migrate_reports_an_unreachable_bucket_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(
        CONTRACKT_HOME=str(tmp_path / "home"),
        CONTRACKT_STORAGE_URL="s3://nowhere/docs",
        CONTRACKT_S3_ENDPOINT_URL="http://127.0.0.1:9",  # discard port: nothing listens
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
    )
    out = subprocess.run([str(BIN), "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "could not create the bucket" in out.stderr
    assert "Traceback" not in out.stderr


pytestmark = pytest.mark.integration
