"""GET /v1/jobs (keyset pagination, signed cursor) and GET /v1/usage (per UTC day), embedded backends."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from contrackt.adapters.db.migrate import alembic_config, upgrade
from contrackt.adapters.db.tables import jobs as jobs_table
from contrackt.adapters.db.tables import usage_daily
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.domain.results import ExtractionResult
from contrackt.ports.extractor import ExtractOptions, ProgressCallback
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf


class MixedExtractor(FakeExtractor):
    """Pages whose text starts with "scan:" come back as OCR pages."""

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        result = await super().extract(pdf, options, progress)
        for page in result.pages:
            if page.text.startswith("scan:"):
                page.source = "ocr"
        return result


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    settings = embedded_settings(tmp_path / "home")
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, MixedExtractor()))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as http:
                yield http, c
    finally:
        await c.close()


async def key(c: Container, name: str) -> dict[str, str]:
    return {"X-API-Key": (await c.tenants.create(name)).api_key}


async def submit(http: httpx.AsyncClient, h: dict[str, str], text: str, *faults: str) -> str:
    r = await http.post("/v1/extract", headers=h, content=fake_pdf(text, *faults))
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def settle(http: httpx.AsyncClient, h: dict[str, str], count: int) -> None:
    for _ in range(400):
        listed = (await http.get("/v1/jobs", params={"limit": 100}, headers=h)).json()["jobs"]
        if len(listed) == count and all(j["status"] in ("completed", "failed") for j in listed):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("jobs did not finish")


async def all_pages(http: httpx.AsyncClient, h: dict[str, str], **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        r = await http.get("/v1/jobs", params={**params, **({"cursor": cursor} if cursor else {})}, headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"jobs", "next_cursor"}
        pages.append(body["jobs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_listing_pages_through_a_tenants_own_jobs_newest_first(
    api: tuple[httpx.AsyncClient, Container],
) -> None:
    http, c = api
    a, b = await key(c, "a"), await key(c, "b")
    ids_a = [await submit(http, a, f"doc {i}") for i in range(23)]
    ids_a.append(await submit(http, a, "broken", "corrupt"))
    ids_b = [await submit(http, b, f"other {i}") for i in range(3)]
    await settle(http, a, 24)

    pages = await all_pages(http, a, limit=10)
    assert [len(p) for p in pages] == [10, 10, 4]
    listed = [j for p in pages for j in p]
    assert [j["job_id"] for j in listed] == list(reversed(ids_a))  # newest first, each once
    stamps = [j["created_at"] for j in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert set(listed[0]) == {"job_id", "status", "pages_total", "pages_done", "error", "created_at", "completed_at"}
    assert listed[0] == (await http.get(f"/v1/jobs/{listed[0]['job_id']}", headers=a)).json()

    failed = await all_pages(http, a, status="failed")
    assert [j["job_id"] for p in failed for j in p] == [ids_a[-1]]
    assert failed[0][0]["error"]["code"] == "corrupt_pdf"
    completed = [j["job_id"] for p in await all_pages(http, a, status="completed", limit=7) for j in p]
    assert completed == list(reversed(ids_a[:-1]))

    theirs = [j["job_id"] for p in await all_pages(http, b, limit=100) for j in p]
    assert sorted(theirs) == sorted(ids_b)


async def test_a_cursor_altered_or_from_another_tenant_or_filter_is_422(
    api: tuple[httpx.AsyncClient, Container],
) -> None:
    http, c = api
    a, b = await key(c, "a"), await key(c, "b")
    for i in range(3):
        await submit(http, a, f"doc {i}")
        await submit(http, b, f"other {i}")
    await settle(http, a, 3)
    cursor = (await http.get("/v1/jobs", params={"limit": 1}, headers=a)).json()["next_cursor"]
    assert cursor
    body, tag = cursor.split(".")
    position = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    position["t"] += 1  # move the position by a microsecond, keep the tag
    moved = base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).rstrip(b"=").decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    flipped = tag[:5] + alphabet[alphabet.index(tag[5]) ^ 32] + tag[6:]
    # The last character of a 16-byte tag carries 2 bits and 4 unused ones: flipping an unused
    # bit decodes to the same bytes, and is refused all the same (only the canonical form passes).
    padded = tag[:-1] + alphabet[alphabet.index(tag[-1]) ^ 1]
    bad = {
        "moved": f"{moved}.{tag}",
        "tag flipped": f"{body}.{flipped}",
        "unused bits": f"{body}.{padded}",
        "garbage": "not-a-cursor",
        "empty tag": f"{body}.",
        "huge": "A" * 5000,
    }
    for name, value in bad.items():
        r = await http.get("/v1/jobs", params={"cursor": value}, headers=a)
        assert r.status_code == 422, name
        assert r.json()["code"] == "invalid_cursor", name
    # Tenant B presenting A's cursor: refused, never A's rows.
    r = await http.get("/v1/jobs", params={"cursor": cursor}, headers=b)
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    # The same tenant with another status filter.
    r = await http.get("/v1/jobs", params={"cursor": cursor, "status": "completed"}, headers=a)
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    # The genuine cursor still works.
    assert (await http.get("/v1/jobs", params={"cursor": cursor, "limit": 1}, headers=a)).status_code == 200


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"status": "done"}, {"limit": "many"}])
async def test_listing_parameters_are_validated(api: tuple[httpx.AsyncClient, Container], params: Any) -> None:
    http, c = api
    r = await http.get("/v1/jobs", params=params, headers=await key(c, "a"))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"


async def test_equal_creation_times_are_ordered_by_id_and_never_skipped(container: Container) -> None:
    new = await container.tenants.create("a")
    principal = await container.tenants.authenticate(new.api_key)
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    ids = [new_id() for _ in range(7)]
    async with container.uow(new.tenant_id) as uow:
        for job_id in ids:
            await uow.jobs.add(Job(id=job_id, tenant_id=new.tenant_id, status=JobStatus.PENDING, created_at=at))
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await container.listing.page(principal, limit=2, cursor=cursor)
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


def day_of(body: dict[str, Any], day: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in body["days"] if d["date"] == day)
    return found


async def test_usage_counts_pages_by_source_and_jobs_by_outcome_and_outlives_pruning(
    api: tuple[httpx.AsyncClient, Container],
) -> None:
    http, c = api
    a, b = await key(c, "a"), await key(c, "b")
    await submit(http, a, "Contrato%PAGEscan: anexo%PAGEscan: assinatura")  # 1 text page, 2 OCR pages
    await submit(http, a, "Recibo")
    await submit(http, a, "x", "corrupt")
    await submit(http, a, "y", "encrypted")
    slow = await submit(http, a, "p1%PAGEp2%PAGEp3%PAGEp4", "slow")
    assert (await http.delete(f"/v1/jobs/{slow}", headers=a)).status_code == 200  # cancelled
    await submit(http, b, "scan: other tenant")
    await settle(http, a, 5)
    await settle(http, b, 1)

    today = datetime.now(UTC).date()
    window = {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    r = await http.get("/v1/usage", params=window, headers=a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["date"] for d in body["days"]] == [window["from"], today.isoformat(), window["to"]]
    expected = {
        "pages": {"text_layer": 2, "ocr": 2, "total": 4},
        "jobs": {"completed": 2, "failed": 3, "failed_by_code": {"cancelled": 1, "corrupt_pdf": 1, "encrypted_pdf": 1}},
    }
    assert body["totals"] == expected
    assert day_of(body, today.isoformat()) == {"date": today.isoformat(), **expected}
    assert day_of(body, window["from"])["jobs"] == {"completed": 0, "failed": 0, "failed_by_code": {}}

    # Tenant B sees only its own.
    theirs = (await http.get("/v1/usage", params=window, headers=b)).json()["totals"]
    assert theirs == {
        "pages": {"text_layer": 0, "ocr": 1, "total": 1},
        "jobs": {"completed": 1, "failed": 0, "failed_by_code": {}},
    }

    # Results expire and retention prunes the job rows: the usage stays.
    async with c.uow(system=True) as uow:
        await uow.conn.execute(sa.delete(jobs_table))  # type: ignore[attr-defined]
    assert (await http.get("/v1/jobs", headers=a)).json()["jobs"] == []
    assert (await http.get("/v1/usage", params=window, headers=a)).json() == body


async def test_usage_default_range_and_validation(api: tuple[httpx.AsyncClient, Container]) -> None:
    http, c = api
    a = await key(c, "a")
    body = (await http.get("/v1/usage", headers=a)).json()
    today = datetime.now(UTC).date()
    assert body["to"] == today.isoformat()
    assert body["from"] == (today - timedelta(days=29)).isoformat()
    assert len(body["days"]) == 30
    year = (await http.get("/v1/usage", params={"from": "2025-01-01", "to": "2026-01-01"}, headers=a)).json()
    assert len(year["days"]) == 366
    for params in (
        {"from": "2025-01-01", "to": "2026-01-02"},  # 367 days
        {"from": "2026-02-02", "to": "2026-02-01"},
        {"from": "2026-02-30"},
        {"to": "yesterday"},
    ):
        r = await http.get("/v1/usage", params=params, headers=a)
        assert r.status_code == 422, params
        assert r.json()["code"] == "invalid_request"


async def test_usage_equals_what_the_jobs_table_says(api: tuple[httpx.AsyncClient, Container]) -> None:
    http, c = api
    a = await key(c, "a")
    faults = ["", "corrupt", "", "encrypted", "", "", "corrupt"]
    for i, fault in enumerate(faults):
        await submit(http, a, f"doc {i}%PAGEscan: {i}", *([fault] if fault else []))
    await settle(http, a, len(faults))
    listed = [j for p in await all_pages(http, a, limit=100) for j in p]
    outcomes = Counter(j["error"]["code"] if j["error"] else "completed" for j in listed)
    totals = (await http.get("/v1/usage", headers=a)).json()["totals"]
    assert totals["jobs"]["completed"] == outcomes.pop("completed")
    assert totals["jobs"]["failed_by_code"] == dict(outcomes)
    assert totals["pages"]["total"] == sum(j["pages_total"] or 0 for j in listed if j["status"] == "completed")


def test_migration_backfills_usage_from_the_jobs_an_older_database_holds(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0004")
    sync = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    tenant = new_id()
    day = date(2026, 3, 1)
    at = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    with sync.begin() as conn:
        usage_daily.drop(conn)  # a database from before revision 0005 had no such table
        conn.execute(sa.text("DROP INDEX IF EXISTS ix_jobs_tenant_status_created"))
        conn.execute(
            sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:id, 'old', :at)"),
            {"id": tenant.replace("-", ""), "at": at.replace(tzinfo=None)},
        )
        rows = [("completed", None, 3), ("completed", None, 2), ("failed", "corrupt_pdf", None)]
        rows.append(("pending", None, None))
        for status, code, pages in rows:
            conn.execute(
                jobs_table.insert().values(
                    id=new_id(),
                    tenant_id=tenant,
                    status=status,
                    error_code=code,
                    pages_total=pages,
                    created_at=at,
                    completed_at=at if status != "pending" else None,
                )
            )
    upgrade(url)
    with sync.connect() as conn:
        got = {(r.day, r.metric): r.total for r in conn.execute(sa.select(usage_daily))}
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("jobs")}
    sync.dispose()
    assert got == {(day, "jobs.completed"): 2, (day, "pages.unknown"): 5, (day, "jobs.failed.corrupt_pdf"): 1}
    assert "ix_jobs_tenant_status_created" in indexes
