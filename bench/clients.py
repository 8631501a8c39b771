"""What the clients' features cost and give (docs/adr/0015-sdk-listing-usage.md).

    .venv/bin/python -m bench.clients [--parts wait,listing,usage] [--postgres] [--n 15] [--jobs 20000]
                                      [--json out.json]

* ``wait``: a real ``contrackt serve`` (temporary home, 2 OCR workers); for the 10-page born-digital PDF
  of the corpus, the time from the first byte sent to the text in hand, and the requests it took,
  four ways, interleaved: ``POST ?wait=30`` (one request), POST + SSE + GET result, POST + polling
  the status every 250 ms + GET result (what clients did before), and ``Client.extract``.
* ``listing``: ``--jobs`` jobs for each of two tenants; one page of 100 at increasing depths, by keyset
  (the repository query behind the cursor) against ``LIMIT/OFFSET``, both mapped to jobs in one
  transaction; the whole ``JobListing.page`` call; and a ``status=failed`` page (1% of the jobs)
  with and without the (tenant, status, created_at) index.
* ``usage``: the transaction that completes a job, as far as its audit append goes, with and
  without the usage upsert (10 pages), ``--n`` × 20 transactions each.

SQLite always; ``--postgres`` adds PostgreSQL (a fresh database from .test-services). Medians in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from contrackt.adapters.db.engine import make_engine
from contrackt.adapters.db.job_repository import _job
from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.db.tables import jobs as jobs_table
from contrackt.adapters.db.uow import SqlUnitOfWorkFactory
from contrackt.adapters.keys.local import LocalKeyProvider
from contrackt.domain.audit import AuditAction
from contrackt.domain.ids import new_id
from contrackt.ports.clock import SystemClock
from contrackt.services import audit, usage
from contrackt.services.keyring import Keyring
from contrackt.services.listing import JobListing
from contrackt.services.tenants import TenantService

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
BIN = Path(sys.executable).parent / "contrackt"
INDEX = "ix_jobs_tenant_status_created"
AsOwner = Callable[[str], Awaitable[None]]  # runs DDL / ANALYZE as the tables' owner


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 2), "p90": round(values[int(0.9 * (len(values) - 1))], 2)}


# wait ---------------------------------------------------------------------------------------


def _serve(home: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """``serve`` on a free port with 2 workers and no rate limits: (process, its URL, an API key)."""
    from bench import stack

    env = stack.base_env(home)
    env.update(
        CONTRACKT_WORKERS="2",
        CONTRACKT_RATE_LIMIT_STATUS="100000/minute",
        CONTRACKT_RATE_LIMIT_EXTRACT="100000/minute",
        CONTRACKT_LOG_LEVEL="WARNING",
    )
    key = stack.tenant(env, "bench")
    url = f"http://127.0.0.1:{stack.free_port()}"
    proc = stack.start(["serve", "--port", url.rsplit(":", 1)[1]], env, home / "serve.log")
    try:
        stack.wait_ready(f"{url}/v1/health/ready", [proc], timeout=180)
    except SystemExit:
        stack.stop([proc])
        raise
    return proc, url, key


def part_wait(n: int) -> dict[str, Any]:
    from contrackt.client import Client

    pdf = (CORPUS / "synthetic" / "born_digital.pdf").read_bytes()
    home = Path(tempfile.mkdtemp(prefix="ctk-bench-clients-"))
    proc, url, key = _serve(home)
    h = {"X-API-Key": key, "Content-Type": "application/pdf"}
    times: dict[str, list[float]] = {"wait": [], "events": [], "poll_250ms": [], "sdk_extract": []}
    requests: dict[str, list[int]] = {k: [] for k in times}
    try:
        with httpx.Client(base_url=url, timeout=90) as http, Client(url, key) as sdk:

            def by_wait() -> int:
                r = http.post("/v1/extract?wait=30&format=text", headers=h, content=pdf)
                assert r.status_code == 200, r.text
                return 1

            def by_events() -> int:
                job = http.post("/v1/extract", headers=h, content=pdf).json()["job_id"]
                with http.stream("GET", f"/v1/jobs/{job}/events", headers=h) as stream:
                    for line in stream.iter_lines():
                        if line.startswith("event: completed"):
                            break
                assert http.get(f"/v1/jobs/{job}/result?format=text", headers=h).status_code == 200
                return 3

            def by_polling() -> int:
                job = http.post("/v1/extract", headers=h, content=pdf).json()["job_id"]
                count = 1
                while True:
                    count += 1
                    if http.get(f"/v1/jobs/{job}", headers=h).json()["status"] == "completed":
                        break
                    time.sleep(0.25)
                assert http.get(f"/v1/jobs/{job}/result?format=text", headers=h).status_code == 200
                return count + 1

            def by_sdk() -> int:
                assert sdk.extract(pdf, format="text").text
                return 1

            ways: dict[str, Callable[[], int]] = {
                "wait": by_wait,
                "events": by_events,
                "poll_250ms": by_polling,
                "sdk_extract": by_sdk,
            }
            for way in ways.values():
                way()  # warm-up: models loaded, connections open
            for _ in range(n):
                for name, way in ways.items():
                    started = time.perf_counter()
                    requests[name].append(way())
                    times[name].append((time.perf_counter() - started) * 1000)
    finally:
        from bench import stack

        stack.stop([proc], signal.SIGTERM, grace=30)
        shutil.rmtree(home, ignore_errors=True)
    return {name: {**ms(values), "requests": statistics.median(requests[name])} for name, values in times.items()}


# listing and usage --------------------------------------------------------------------------


async def _world(url: str, home: Path) -> tuple[SqlUnitOfWorkFactory, TenantService, Keyring]:
    uow = SqlUnitOfWorkFactory(make_engine(url))
    clock = SystemClock()
    keyring = Keyring(LocalKeyProvider(home / "master.key"), uow, clock)
    return uow, TenantService(uow, keyring, clock), keyring


async def _median(n: int, fn: Callable[[], Awaitable[None]]) -> float:
    values = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        values.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(values), 3)


async def part_listing(url: str, home: Path, count: int, n: int, as_owner: AsOwner) -> dict[str, Any]:
    uow, tenants, keyring = await _world(url, home)
    listing = JobListing(uow, keyring)
    out: dict[str, Any] = {"jobs_per_tenant": count}
    try:
        principals = []
        for name in ("a", "b"):
            principals.append(await tenants.authenticate((await tenants.create(name)).api_key))
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for p in principals:
            rows = [
                {
                    "id": new_id(),
                    "tenant_id": p.tenant_id,
                    "status": "failed" if i % 100 == 0 else "completed",
                    "created_at": start + timedelta(seconds=i),
                }
                for i in range(count)
            ]
            for i in range(0, count, 5000):
                async with uow(p.tenant_id) as u:
                    await u.conn.execute(jobs_table.insert(), rows[i : i + 5000])
        await as_owner("ANALYZE")  # fresh planner statistics after the bulk insert, as autovacuum would give
        a = principals[0]
        depths = [d for d in (0, 10, 100, count // 100 - 1) if d * 100 < count]
        positions: dict[int, tuple[datetime, str] | None] = {0: None}
        cursor = None
        for page_no in range(max(depths)):
            page = await listing.page(a, limit=100, cursor=cursor)
            cursor = page.next_cursor
            if page_no + 1 in depths:
                positions[page_no + 1] = (page.jobs[-1].created_at, page.jobs[-1].id)
        for depth in depths:

            async def keyset(depth: int = depth) -> None:
                async with uow(a.tenant_id) as u:
                    found = await u.jobs.page(a.tenant_id, status=None, before=positions[depth], limit=100)
                assert len(found) == 100

            async def offset(depth: int = depth) -> None:
                async with uow(a.tenant_id) as u:
                    rows = await u.conn.execute(
                        jobs_table.select()
                        .where(jobs_table.c.tenant_id == a.tenant_id)
                        .order_by(jobs_table.c.created_at.desc(), jobs_table.c.id.desc())
                        .limit(100)
                        .offset(depth * 100)
                    )
                    assert len([_job(r._mapping) for r in rows]) == 100

            out[f"page_at_row_{depth * 100}"] = {
                "keyset_ms": await _median(n, keyset),
                "offset_ms": await _median(n, offset),
            }

        async def whole_call() -> None:  # the service: keyring (cached), query, cursor signed
            assert len((await listing.page(a, limit=100)).jobs) == 100

        out["listing_page_call_ms"] = await _median(n, whole_call)

        async def failed_page() -> None:
            assert len((await listing.page(a, status="failed", limit=100)).jobs) == min(100, count // 100)

        indexed = await _median(n, failed_page)
        await as_owner(f"DROP INDEX {INDEX}")
        out["status_failed_page"] = {"with_index_ms": indexed, "without_index_ms": await _median(n, failed_page)}
    finally:
        await uow.close()
    return out


async def part_usage(url: str, home: Path, n: int) -> dict[str, Any]:
    uow, tenants, _ = await _world(url, home)
    clock = SystemClock()
    try:
        tenant = (await tenants.create("usage")).tenant_id
        job = new_id()

        async def finish(with_usage: bool) -> None:
            async with uow(tenant) as u:
                await audit.record(u, clock, tenant, AuditAction.COMPLETED, job_id=job, page_count=10)
                if with_usage:
                    await usage.count_completed(u, tenant, clock.now(), ["ocr"] * 6 + ["text_layer"] * 4)

        rounds: dict[str, list[float]] = {"audit_only_ms": [], "audit_and_usage_ms": []}
        for _ in range(20):  # interleaved, so both see the same load
            rounds["audit_only_ms"].append(await _median(n, lambda: finish(False)))
            rounds["audit_and_usage_ms"].append(await _median(n, lambda: finish(True)))
        return {k: round(statistics.median(v), 3) for k, v in rounds.items()}
    finally:
        await uow.close()


async def databases(parts: list[str], count: int, n: int, postgres: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    Step = Callable[[], Awaitable[None]]
    targets: list[tuple[str, Callable[[], Awaitable[tuple[str, Step, AsOwner]]]]] = []

    async def sqlite_db() -> tuple[str, Step, AsOwner]:
        home = Path(tempfile.mkdtemp(prefix="ctk-bench-db-"))
        url = f"sqlite+aiosqlite:///{home / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)

        async def drop() -> None:
            shutil.rmtree(home, ignore_errors=True)

        async def as_owner(sql: str) -> None:
            engine = make_engine(url)
            async with engine.begin() as conn:
                await conn.exec_driver_sql(sql)
            await engine.dispose()

        return url, drop, as_owner

    async def postgres_db() -> tuple[str, Step, AsOwner]:
        import asyncpg
        from tests.contract.services import FreshPostgres

        pg = FreshPostgres()
        await asyncio.to_thread(pg.migrate)

        async def as_owner(sql: str) -> None:  # the service role may not: only the owner (the admin here)
            conn = await asyncpg.connect(pg.dsn(pg.admin_target_url))
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        return pg.service_url, pg.drop, as_owner

    targets.append(("sqlite", sqlite_db))
    if postgres:
        targets.append(("postgresql", postgres_db))
    for name, make in targets:
        result: dict[str, Any] = {}
        for part in ("listing", "usage"):
            if part not in parts:
                continue
            url, drop, as_owner = await make()
            home = Path(tempfile.mkdtemp(prefix="ctk-bench-keys-"))
            try:
                if part == "listing":
                    result[part] = await part_listing(url, home, count, n, as_owner)
                else:
                    result[part] = await part_usage(url, home, n)
            finally:
                await drop()
                shutil.rmtree(home, ignore_errors=True)
        out[name] = result
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="wait,listing,usage")
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()
    parts = args.parts.split(",")
    report: dict[str, Any] = {"load_start": load()}
    if "wait" in parts:
        report["wait_born_digital_10_pages"] = part_wait(args.n)
    if "listing" in parts or "usage" in parts:
        report.update(asyncio.run(databases(parts, args.jobs, args.n, args.postgres)))
    report["load_end"] = load()
    print(json.dumps(report, indent=2))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
