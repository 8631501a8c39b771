"""Acceptance, production mode with DEFAULT lease and sweep settings: `contrackt api` + two
`contrackt worker` over PostgreSQL, S3 (moto), Redis Streams or Kafka, real OCR.

* A worker SIGKILLed in the middle of a job: the job completes within 90 s (the lease is
  30 s and renewed by heartbeats; the queue hands the abandoned message to the other
  worker, whose claim takes the job over once the lease has run out).
* Tenant A's backlog does not delay tenant B: B's document is done while A's are still
  waiting (one worker with one regular consumer, so a FIFO would serve B last; the
  worker's spare consumer, or else the round-robin, serves B next).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.contract.services import service, unique
from tests.integration.test_production_flow import CORPUS, Deployment, Proc, deployment, kill_mid_job

__all__ = ["deployment"]  # the fixture, reused

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

# Only the lease and sweep defaults are under test: drop the fixture's short test values.
TEST_TIMINGS = ("CONTRACKT_LEASE_SECONDS", "CONTRACKT_STALE_PENDING_SECONDS", "CONTRACKT_SWEEP_INTERVAL_SECONDS")
RECOVERY_LIMIT_S = 90.0


def cut(name: str, pages: list[int], folder: Path) -> bytes:
    import pypdfium2 as pdfium

    source = CORPUS / f"{name}.pdf"
    if not source.exists():
        pytest.fail(f"test corpus missing: {source}")
    dst = pdfium.PdfDocument.new()
    dst.import_pages(pdfium.PdfDocument(source), pages)
    path = folder / f"{name}_{'_'.join(map(str, pages))}.pdf"
    dst.save(path)
    return path.read_bytes()


async def post(d: Deployment, key: str, doc: bytes) -> str:
    async with httpx.AsyncClient(base_url=d.base, timeout=30) as http:
        r = await http.post("/v1/extract", content=doc, headers={"X-API-Key": key, "Content-Type": "application/pdf"})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def job_row(d: Deployment, job_id: str) -> dict[str, object]:
    conn = await d.admin()
    try:
        row = await conn.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1", uuid.UUID(job_id))
        completed = await conn.fetchval(
            "SELECT count(*) FROM audit_logs WHERE action = 'COMPLETED' AND job_id = $1", uuid.UUID(job_id)
        )
    finally:
        await conn.close()
    assert row is not None
    return {"status": row["status"], "attempts": row["attempts"], "completed_rows": completed}


async def _kill_and_recover(d: Deployment, tmp: Path) -> float:
    for name in TEST_TIMINGS:
        d.env.pop(name, None)
    scan = cut("scan_mild", [0, 1, 2], tmp)
    alpha = d.tenant("Alfa Ltda")
    await d.start_api()
    workers = list(await asyncio.gather(d.start_worker("worker-1"), d.start_worker("worker-2")))
    job_id = await post(d, alpha["api_key"], scan)
    victim, held = await kill_mid_job(workers)
    killed_at = time.monotonic()
    assert held == job_id
    survivor: Proc = next(w for w in workers if w is not victim)
    while (row := await job_row(d, job_id))["status"] != "completed":
        waited = time.monotonic() - killed_at
        assert row["status"] != "failed", row
        assert waited < RECOVERY_LIMIT_S, f"not recovered {waited:.0f}s after the kill: {row}\n{d.tails()}"
        await asyncio.sleep(0.5)
    recovered = time.monotonic() - killed_at
    assert row == {"status": "completed", "attempts": 2, "completed_rows": 1}, row
    took_over = [
        line for line in survivor.lines() if line.get("event") == "job.processing" and line.get("job_id") == job_id
    ]
    assert took_over, "the surviving worker finished the job"
    for _ in range(20):
        if not await d.bucket_keys():
            break
        await asyncio.sleep(0.25)
    assert await d.bucket_keys() == [], "the document was destroyed"
    return recovered


async def test_sigkilled_worker_job_completes_within_90s_redis(deployment: Deployment, tmp_path: Path) -> None:
    recovered = await _kill_and_recover(deployment, tmp_path)
    print(f"\nrecovery (Redis Streams, default lease 30 s / sweep 15 s): job completed {recovered:.1f}s after SIGKILL")


async def test_sigkilled_worker_job_completes_within_90s_kafka(deployment: Deployment, tmp_path: Path) -> None:
    topic = unique("ctk-recover-")
    deployment.env["CONTRACKT_QUEUE_URL"] = f"kafka://{service('KAFKA')}/{topic}?partitions=4&group={topic}"
    recovered = await _kill_and_recover(deployment, tmp_path)
    print(f"\nrecovery (Kafka, default lease 30 s / sweep 15 s): job completed {recovered:.1f}s after SIGKILL")


async def test_a_tenants_backlog_does_not_delay_another_tenant_redis(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    d.env.update(CONTRACKT_WORKERS="1", CONTRACKT_CONCURRENCY="1")
    scans = [cut("scan_mild", [i, i + 1], tmp_path) for i in (0, 2, 4, 6)]
    born = cut("born_digital", [0], tmp_path)
    a, b = d.tenant("Greedy"), d.tenant("Patient")
    await d.start_api()
    await d.start_worker("worker-1")
    a_jobs = [await post(d, a["api_key"], scans[i % len(scans)]) for i in range(6)]
    while (await job_row(d, a_jobs[0]))["status"] == "pending":
        await asyncio.sleep(0.2)
    started = time.monotonic()
    b_job = await post(d, b["api_key"], born)
    while (await job_row(d, b_job))["status"] != "completed":
        assert time.monotonic() - started < 120, d.tails()
        await asyncio.sleep(0.2)
    latency = time.monotonic() - started
    a_left = [(await job_row(d, j))["status"] for j in a_jobs]
    waiting = sum(s != "completed" for s in a_left)
    print(
        f"\nfairness (Redis Streams, 1 worker, 1 regular consumer + the spare): B done in {latency:.1f}s "
        f"with {waiting} of A's 6 two-page scans unfinished"
    )
    assert waiting >= 5, f"B was not served right after A's job in hand: {a_left}"
    await d.wait_all_finished(7, timeout=300)
