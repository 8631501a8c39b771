"""Shared fixtures: a containerised app on temporary embedded backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.settings import Settings
from contrackt.worker.runtime import WorkerRuntime
from tests.fakes import FakeExtractor

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_path(*parts: str) -> Path:
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test corpus missing: {path} (the repository expects ../shared/corpus beside it)")
    return path


def embedded_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "stale_pending_seconds": 5.0,
        "sweep_interval_seconds": 0.5,
        "shutdown_grace_seconds": 5.0,
        "rate_limit_status": "100000/minute",
        "rate_limit_extract": "100000/minute",
        "workers": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return embedded_settings(tmp_path / "home")


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    yield c
    await c.close()


@pytest.fixture
def fake_extractor() -> FakeExtractor:
    return FakeExtractor()


@pytest.fixture
async def client(container: Container, fake_extractor: FakeExtractor) -> AsyncIterator[httpx.AsyncClient]:
    """The API with an in-process worker using the fake extractor."""
    app = create_app(container=container, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, fake_extractor))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http
