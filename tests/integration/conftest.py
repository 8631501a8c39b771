"""Integration fixtures: a fresh PostgreSQL database per test module, migrated as in production."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.contract.services import FreshPostgres


@pytest.fixture
async def pg() -> AsyncIterator[FreshPostgres]:
    db = FreshPostgres()
    try:
        await asyncio.to_thread(db.migrate)
        yield db
    finally:
        await db.drop()
