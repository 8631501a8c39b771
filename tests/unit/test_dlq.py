"""Dead letters in the embedded mode: a retryable failure keeps its sealed document for the replay
window, a replay runs the job again through the database and the outbox, a drop destroys the
document, and the audit trail and the deletion receipt say exactly that."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from click.testing import CliRunner, Result

from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.queue.dead_memory import MemoryDeadLetters
from contrackt.adapters.queue.memory import MemoryQueue
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.cli import main
from contrackt.domain.errors import ResourceLimit
from contrackt.ports.extractor import ExtractOptions, ProgressCallback
from contrackt.services import processing
from contrackt.services.deadletters import DeadLetterService, UnknownDeadLetter
from contrackt.settings import Settings
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf
from tests.unit.lifecycle_support import MovableClock, auth, eventually, job_chain, new_tenant


class FlakyExtractor(FakeExtractor):
    """Fails like a killed child (retryable) while ``broken``; an operator "fixes" it."""

    broken = True

    async def extract(self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None) -> Any:
        if self.broken:
            self.calls += 1
            raise ResourceLimit("the child process died")
        return await super().extract(pdf, options, progress)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processing, "backoff_seconds", lambda attempt: 0.05)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def extractor() -> FlakyExtractor:
    return FlakyExtractor()


@pytest.fixture
def window() -> float:
    return 12.0


@pytest.fixture
def settings(tmp_path: Path, window: float) -> Settings:
    return embedded_settings(tmp_path / "home", replay_window_hours=window)


@pytest.fixture
async def app(
    settings: Settings, clock: MovableClock, extractor: FlakyExtractor
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings, clock=clock)
    api = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, extractor))
    try:
        async with api.router.lifespan_context(api):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as http:
                yield http, c
    finally:
        await c.close()


def dlq(c: Container) -> DeadLetterService:
    assert isinstance(c.queue, MemoryQueue)
    return DeadLetterService(c.uow, MemoryDeadLetters(c.queue), c.blobs, c.clock)


async def status_of(client: httpx.AsyncClient, t: dict[str, str], job_id: str, wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}", headers=auth(t))).json()
        return body if body["status"] == wanted else None

    result: dict[str, Any] = await eventually(check, timeout=30)
    return result


async def failed_job(client: httpx.AsyncClient, c: Container) -> tuple[dict[str, str], str]:
    t = await new_tenant(c)
    r = await client.post("/v1/extract", headers=auth(t), content=fake_pdf("Contrato"))
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    assert (await status_of(client, t, job_id, "failed"))["error"]["code"] == "resource_limit"
    await eventually(lambda: dlq(c).entries(), timeout=10)  # dead-lettered right after the failure
    return t, job_id


async def actions(c: Container, t: dict[str, str], job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.event.action.value, r.event.details) for r in await job_chain(c, t["tenant_id"], job_id)]


async def test_a_held_document_is_replayed_once_fixed_and_completes(
    app: tuple[httpx.AsyncClient, Container], extractor: FlakyExtractor
) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    assert len(await c.blobs.list()) == 1  # the sealed document waits for a replay
    held = [d for a, d in await actions(c, t, job_id) if a == "HELD"]
    assert len(held) == 1 and held[0]["what"] == "document" and "until" in held[0]
    r = await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))
    assert (r.status_code, r.json()["code"]) == (409, "not_purged")
    assert "kept until" in r.json()["detail"] and "DELETE" in r.json()["detail"]

    [entry] = await dlq(c).entries()
    assert (entry.job_id, entry.tenant_id, entry.reason, entry.deliveries) == (
        job_id,
        t["tenant_id"],
        "resource_limit",
        3,
    )
    assert entry.job_status == "failed" and entry.replayable and entry.document.startswith("held until ")

    extractor.broken = False
    [outcome] = await dlq(c).replay(job_id)
    assert (outcome.outcome, outcome.entry_removed) == ("replayed", True)
    await status_of(client, t, job_id, "completed")
    assert (await client.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).json()["text"] == "Contrato"
    rows = await actions(c, t, job_id)
    replayed = [d for a, d in rows if a == "REPLAYED"]
    assert replayed == [{"attempt": 3, "outcome": "resource_limit", "reason": "resource_limit"}]
    assert [d["attempt"] for a, d in rows if a == "PROCESSING"] == [1, 2, 3, 4]  # a new budget, fences intact
    await eventually(lambda: _purged(c, t, job_id))
    receipt = (await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))).json()
    assert receipt["destroyed"] == ["document"]
    assert await dlq(c).entries() == []
    with pytest.raises(UnknownDeadLetter):
        await dlq(c).replay(job_id)


async def _purged(c: Container, t: dict[str, str], job_id: str) -> bool:
    return any(a == "PURGED" for a, _ in await actions(c, t, job_id))


async def test_a_drop_destroys_the_document_and_the_receipt_says_so(app: tuple[httpx.AsyncClient, Container]) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    [entry] = await dlq(c).entries()
    [outcome] = await dlq(c).drop(str(entry.entry_id))
    assert (outcome.outcome, outcome.entry_removed, outcome.document_destroyed) == ("dropped", True, True)
    assert await c.blobs.list() == []
    rows = await actions(c, t, job_id)
    assert ("DROPPED", {"outcome": "failed", "reason": "resource_limit", "what": "document"}) in rows
    assert ("PURGED", {"what": "document", "reason": "dlq_dropped"}) in rows
    receipt = (await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))).json()
    assert receipt["destroyed"] == ["document"] and receipt["completed_at"] is not None
    assert await dlq(c).entries() == []
    with pytest.raises(UnknownDeadLetter):
        await dlq(c).replay(job_id)


@pytest.mark.parametrize("window", [0.0])
async def test_without_a_window_the_document_goes_at_failure(app: tuple[httpx.AsyncClient, Container]) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    await eventually(lambda: _purged(c, t, job_id))
    assert await c.blobs.list() == []
    assert "HELD" not in [a for a, _ in await actions(c, t, job_id)]
    [outcome] = await dlq(c).replay(job_id)
    assert (outcome.outcome, outcome.entry_removed) == ("needs_resubmission", False)
    [entry] = await dlq(c).entries()  # kept for the operator to drop once the tenant knows
    assert entry.document == "destroyed" and not entry.replayable
    assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(t))).json()["status"] == "failed"


async def test_the_window_ends_with_the_sweeper(app: tuple[httpx.AsyncClient, Container], clock: MovableClock) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    clock.advance(12 * 3600 + 1)
    [entry] = await dlq(c).entries()
    assert not entry.replayable
    [outcome] = await dlq(c).replay(job_id)
    assert outcome.outcome == "needs_resubmission"  # past its window even before the sweeper ran
    report = await c.sweeper.sweep()
    assert report.held_documents_destroyed in (0, 1)  # the worker's own sweeper may have been first
    await eventually(lambda: _purged(c, t, job_id))
    assert await c.blobs.list() == []
    assert ("PURGED", {"what": "document", "reason": "hold_expired"}) in await actions(c, t, job_id)
    assert (await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))).status_code == 200


async def test_delete_ends_the_hold_and_destroys_the_document(app: tuple[httpx.AsyncClient, Container]) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    assert (await client.delete(f"/v1/jobs/{job_id}", headers=auth(t))).status_code == 200
    assert await c.blobs.list() == []
    [outcome] = await dlq(c).replay(job_id)
    assert outcome.outcome == "needs_resubmission"
    assert (await client.get(f"/v1/jobs/{job_id}/receipt", headers=auth(t))).json()["destroyed"] == ["document"]


async def test_two_replays_at_once_run_the_job_once(
    app: tuple[httpx.AsyncClient, Container], extractor: FlakyExtractor
) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    extractor.broken = False
    first, second = await asyncio.gather(dlq(c).replay(job_id), dlq(c).replay(job_id))
    assert sorted([first[0].outcome, second[0].outcome]) in (
        ["already_queued", "replayed"],
        ["already_completed", "replayed"],
    )
    assert sorted([first[0].entry_removed, second[0].entry_removed]) == [False, True]
    await status_of(client, t, job_id, "completed")
    assert [a for a, _ in await actions(c, t, job_id)].count("REPLAYED") == 1


async def cli(settings: Settings, *args: str) -> Result:
    def run() -> Result:
        with mock.patch("contrackt.logging.configure", lambda *a, **k: None):
            return CliRunner().invoke(main, list(args), env={"CONTRACKT_HOME": str(settings.home)})

    return await asyncio.to_thread(run)


def last_json(result: Result) -> Any:
    """The command's JSON (in tests, log lines share the runner's stdout: they come before it)."""
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line in ("[", "[]") or line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


async def test_the_embedded_cli_sees_held_jobs_in_the_database(
    app: tuple[httpx.AsyncClient, Container], extractor: FlakyExtractor, settings: Settings
) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    listed = await cli(settings, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = last_json(listed)
    assert set(row) == {
        "entry_id",
        "job_id",
        "tenant_id",
        "reason",
        "deliveries",
        "dead_at",
        "job_status",
        "document",
        "replayable",
    }
    assert (row["job_id"], row["tenant_id"], row["reason"], row["deliveries"]) == (
        job_id,
        t["tenant_id"],
        "resource_limit",
        3,
    )
    table = await cli(settings, "dlq", "list")
    assert "JOB_ID" in table.output and job_id in table.output and "held until" in table.output
    assert (await cli(settings, "dlq", "replay")).exit_code == 2  # an ID or --all
    unknown = await cli(settings, "dlq", "show", "nope")
    assert unknown.exit_code == 1 and "no dead letter" in unknown.output
    extractor.broken = False
    replayed = await cli(settings, "dlq", "replay", "--all", "--json")
    assert replayed.exit_code == 0, replayed.output
    assert [o["outcome"] for o in last_json(replayed)] == ["replayed"]
    await status_of(client, t, job_id, "completed")
    assert last_json(await cli(settings, "dlq", "list", "--json")) == []


async def test_erasing_the_tenant_ends_the_hold(app: tuple[httpx.AsyncClient, Container]) -> None:
    client, c = app
    t, job_id = await failed_job(client, c)
    await c.tenants.erase(t["tenant_id"], c.blobs, c.results)
    assert await c.blobs.list() == []
    [outcome] = await dlq(c).replay(job_id)
    assert outcome.outcome == "needs_resubmission"
    async with c.uow(t["tenant_id"]) as uow:
        job = await uow.jobs.get(t["tenant_id"], job_id)
    assert job is not None and job.document_hold_until is None and job.status.value == "failed"
