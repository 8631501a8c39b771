"""Helpers for the key, audit and lifecycle tests (issue 5)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from click.testing import CliRunner, Result

from contrackt.bootstrap import Container
from contrackt.cli import main
from contrackt.domain.audit import ChainRow
from contrackt.ports.clock import SystemClock
from contrackt.services.dispatch import relay_outbox
from contrackt.settings import Settings
from tests.fakes import FakeExtractor


class MovableClock(SystemClock):
    """Wall clock plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return super().now() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


async def new_tenant(c: Container, name: str = "acme") -> dict[str, str]:
    key = await c.tenants.create(name)
    return {"X-API-Key": key.api_key, "tenant_id": key.tenant_id, "key_id": key.key_id}


def auth(t: dict[str, str]) -> dict[str, str]:
    return {"X-API-Key": t["X-API-Key"]}


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


async def wait_done(client: httpx.AsyncClient, job_id: str, h: dict[str, str]) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await client.get(f"/v1/jobs/{job_id}", headers=h)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["status"] in ("completed", "failed") else None

    result: dict[str, Any] = await eventually(check)
    return result


async def job_chain(c: Container, tenant_id: str, job_id: str) -> list[ChainRow]:
    async with c.uow(tenant_id) as uow:
        return [r for r in await uow.audit.chain(tenant_id) if r.event.job_id == job_id]


async def wait_purged(c: Container, tenant_id: str, job_id: str) -> list[ChainRow]:
    """The job's audit rows once the document's PURGED row is written (it follows COMPLETED)."""

    async def check() -> list[ChainRow] | None:
        rows = await job_chain(c, tenant_id, job_id)
        return rows if any(r.event.action == "PURGED" for r in rows) else None

    rows: list[ChainRow] = await eventually(check)
    return rows


async def process_pending(c: Container, extractor: FakeExtractor | None = None) -> int:
    """Run the worker's steps by hand: relay the outbox, handle every queued message."""
    processing = c.processing or c.attach_extractor(extractor or FakeExtractor())
    await relay_outbox(c.uow, c.queue, c.clock)
    handled = 0
    while (delivery := await c.queue.receive("test", 0.05)) is not None:
        await processing.handle(delivery)
        handled += 1
    return handled


def db_path(settings: Settings) -> Path:
    return settings.home / "contrackt.db"


def raw_db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(db_path(settings))


def invoke_cli(home: Path, *args: str) -> Result:
    """Run ``contrackt ARGS`` in-process against CONTRACKT_HOME=home.

    The CLI's global side effects (structlog configuration bound to the runner's
    stderr, the process umask) would leak into later tests; they are held back.
    """
    umask = os.umask(0o077)
    os.umask(umask)
    try:
        with mock.patch("contrackt.logging.configure", lambda *a, **k: None):
            return CliRunner().invoke(main, list(args), env={"CONTRACKT_HOME": str(home)})
    finally:
        os.umask(umask)
