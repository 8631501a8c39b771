"""Acceptance run of production mode: `contrackt api` + two `contrackt worker` processes over
PostgreSQL (service role, RLS), S3 (moto), Redis Streams or Kafka, Redis results and limits.

What it shows: every job completes exactly once (one COMPLETED audit row per job)
although a worker is SIGKILLed mid-job, and no document is left in the bucket;
with a Redis that restarts empty, the database reconciler re-enqueues what was lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.contract.services import REPO, FreshPostgres, drop_redis_queue, service, unique

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

CORPUS = REPO.parent / "shared" / "corpus" / "synthetic"
CONTRACKT = Path(sys.executable).with_name("contrackt")
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One-page documents cut from the corpus (born-digital and a mild scan)."""
    import pypdfium2 as pdfium

    out: dict[str, bytes] = {}
    folder = tmp_path_factory.mktemp("pdfs")
    for name in ("born_digital", "scan_mild"):
        source = CORPUS / f"{name}.pdf"
        if not source.exists():
            pytest.fail(f"test corpus missing: {source}")
        src = pdfium.PdfDocument(source)
        for page in range(2):
            dst = pdfium.PdfDocument.new()
            dst.import_pages(src, [page])
            path = folder / f"{name}_{page}.pdf"
            dst.save(path)
            out[f"{name}_{page}"] = path.read_bytes()
    return out


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def kill(self) -> None:
        """SIGKILL the process group (the worker and its OCR children)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Deployment:
    env: dict[str, str]
    tmp: Path
    pg: FreshPostgres
    bucket: str
    procs: list[Proc] = field(default_factory=list)
    port: int = 0

    def run(self, *args: str) -> str:
        res = subprocess.run([str(CONTRACKT), *args], env=self.env, capture_output=True, timeout=120, check=False)
        if res.returncode != 0:
            raise AssertionError(f"contrackt {' '.join(args)} failed: {res.stderr.decode()[-2000:]}")
        return res.stdout.decode()

    def start(self, name: str, *args: str) -> Proc:
        log = self.tmp / f"{name}.log"
        env = dict(self.env)
        if args[0] == "worker":  # each worker's health and metrics listener on a port of its own
            env["CONTRACKT_WORKER_LISTEN"] = f"127.0.0.1:{free_port()}"
        popen = subprocess.Popen(
            [str(CONTRACKT), *args],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    async def start_api(self) -> Proc:
        self.port = free_port()
        proc = self.start("api", "api", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if proc.popen.poll() is not None:
                    raise AssertionError(f"api exited: {proc.log.read_text()[-3000:]}")
                try:
                    if (await http.get(f"{self.base}/v1/health/live")).status_code == 200:
                        return proc
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"api did not start: {proc.log.read_text()[-3000:]}")

    async def start_worker(self, name: str) -> Proc:
        proc = self.start(name, "worker")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise AssertionError(f"{name} exited: {proc.log.read_text()[-3000:]}")
            if any(line.get("event") == "worker.started" for line in proc.lines()):
                return proc
            await asyncio.sleep(0.2)
        raise AssertionError(f"{name} did not start: {proc.log.read_text()[-3000:]}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tenant(self, name: str) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.run("tenant", "create", name, "--json").strip().splitlines()[-1])
        return data

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.pg.dsn(self.pg.admin_target_url))

    async def statuses(self) -> dict[str, int]:
        conn = await self.admin()
        try:
            rows = await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        finally:
            await conn.close()
        return {r["status"]: int(r["n"]) for r in rows}

    async def wait_all_finished(self, total: int, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            st = await self.statuses()
            if st.get("completed", 0) + st.get("failed", 0) >= total:
                return time.monotonic() - started
            for p in self.procs:
                if p.popen.poll() not in (None, -signal.SIGKILL, 0):
                    raise AssertionError(f"{p.name} died: {p.log.read_text()[-3000:]}")
            await asyncio.sleep(0.5)
        raise AssertionError(f"jobs did not finish in {timeout}s: {await self.statuses()}\n" + self.tails())

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text(errors='replace')[-2500:]}" for p in self.procs)

    async def bucket_keys(self) -> list[str]:
        import aioboto3

        async with aioboto3.Session().client("s3", endpoint_url=service("S3")) as s3:
            listing = await s3.list_objects_v2(Bucket=self.bucket)
        return [o["Key"] for o in listing.get("Contents", [])]

    def close(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    from contrackt.adapters.blob.s3 import S3BlobStore

    for k, v in AWS.items():
        os.environ.setdefault(k, v)
    s3_endpoint = service("S3")
    redis = service("REDIS")
    pg = FreshPostgres()
    await asyncio.to_thread(pg.migrate)
    bucket = unique("ctk-flow-")
    store = S3BlobStore.from_url(f"s3://{bucket}/docs", endpoint_url=s3_endpoint)
    await store.ensure_bucket()
    await store.close()
    stream = unique("ctk-flow-jobs-")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")},
        **AWS,
        "CONTRACKT_ENV": "dev",
        "CONTRACKT_HOME": str(tmp_path / "home"),
        "CONTRACKT_DATABASE_URL": pg.service_url,
        "CONTRACKT_STORAGE_URL": f"s3://{bucket}/docs",
        "CONTRACKT_S3_ENDPOINT_URL": s3_endpoint,
        "CONTRACKT_QUEUE_URL": f"{redis}/0/{stream}",
        "CONTRACKT_RESULTS_URL": f"{redis}/0",
        "CONTRACKT_RATE_LIMIT_URL": f"{redis}/0",
        "CONTRACKT_KEYS_URL": "local://",
        "CONTRACKT_WORKERS": "1",
        "CONTRACKT_CONCURRENCY": "2",
        "CONTRACKT_LEASE_SECONDS": "6",
        "CONTRACKT_STALE_PENDING_SECONDS": "8",
        "CONTRACKT_SWEEP_INTERVAL_SECONDS": "1",
        "CONTRACKT_SHUTDOWN_GRACE_SECONDS": "3",
        "CONTRACKT_RATE_LIMIT_EXTRACT": "100000/minute",
        "CONTRACKT_RATE_LIMIT_STATUS": "100000/minute",
        "CONTRACKT_LOG_FORMAT": "json",
        "OMP_NUM_THREADS": "1",
    }
    d = Deployment(env=env, tmp=tmp_path, pg=pg, bucket=bucket)
    try:
        yield d
    finally:
        d.close()
        await drop_redis_queue(redis, stream)
        import aioboto3

        async with aioboto3.Session().client("s3", endpoint_url=s3_endpoint) as s3:
            for key in await d.bucket_keys():
                await s3.delete_object(Bucket=bucket, Key=key)
            await s3.delete_bucket(Bucket=bucket)
        await pg.drop()


def job_mix(pdfs: dict[str, bytes], n: int, scans: int) -> list[bytes]:
    docs = [pdfs[f"scan_mild_{i % 2}"] for i in range(scans)]
    docs += [pdfs[f"born_digital_{i % 2}"] for i in range(n - scans)]
    # Interleave so scans are spread over the run.
    return [docs[(i * 7) % n] for i in range(n)] if n % 7 else docs


async def submit_all(d: Deployment, tenants: list[dict[str, str]], docs: list[bytes]) -> list[str]:
    ids = []
    async with httpx.AsyncClient(base_url=d.base, timeout=30) as http:
        for i, doc in enumerate(docs):
            key = tenants[i % len(tenants)]["api_key"]
            resp = await http.post(
                "/v1/extract", content=doc, headers={"X-API-Key": key, "Content-Type": "application/pdf"}
            )
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["job_id"])
    return ids


async def kill_mid_job(workers: list[Proc], timeout: float = 90) -> tuple[Proc, str]:
    """SIGKILL the first of ``workers`` seen holding a job; it and the job id it held.

    (With Kafka, partitions follow tenants: one worker may get no job at all.)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            held: dict[str, int] = {}
            for line in worker.lines():
                job = line.get("job_id")
                if job is None:
                    continue
                if line.get("event") == "job.processing":
                    held[job] = 1
                elif line.get("event") in ("job.completed", "job.failed", "job.retry"):
                    held.pop(job, None)
            if held:
                worker.kill()
                return worker, next(iter(held))
        await asyncio.sleep(0.05)
    raise AssertionError("no worker ever held a job")


async def check_outcome(d: Deployment, job_ids: list[str], tenants: list[dict[str, str]]) -> dict[str, Any]:
    conn = await d.admin()
    try:
        statuses = await conn.fetch("SELECT id::text, status, attempts FROM jobs")
        completed = await conn.fetch(
            "SELECT job_id::text, count(*) AS n FROM audit_logs WHERE action = 'COMPLETED' GROUP BY job_id"
        )
    finally:
        await conn.close()
    by_id = {r["id"]: r for r in statuses}
    assert set(by_id) == set(job_ids)
    assert {r["status"] for r in statuses} == {"completed"}, [dict(r) for r in statuses if r["status"] != "completed"]
    counts = {r["job_id"]: int(r["n"]) for r in completed}
    assert counts == dict.fromkeys(job_ids, 1), "exactly one COMPLETED audit row per job"
    # Blob deletion follows the commit; give the last one a moment.
    for _ in range(20):
        if not await d.bucket_keys():
            break
        await asyncio.sleep(0.25)
    assert await d.bucket_keys() == []
    # Results travel back through Redis and the tenant's key; other tenants see 404.
    async with httpx.AsyncClient(base_url=d.base, timeout=30) as http:
        first = job_ids[0]
        res = await http.get(f"/v1/jobs/{first}/result", headers={"X-API-Key": tenants[0]["api_key"]})
        assert res.status_code == 200, res.text
        assert "CONTRATO" in res.json()["text"].upper()
        res = await http.get(f"/v1/jobs/{first}/result", headers={"X-API-Key": tenants[1]["api_key"]})
        assert res.status_code == 404
    # The chains are intact.
    d.run("audit", "verify")
    return {"max_attempts": max(r["attempts"] for r in statuses)}


async def _flow(d: Deployment, pdfs: dict[str, bytes], n: int, scans: int) -> dict[str, Any]:
    tenants = [d.tenant("Alfa Ltda"), d.tenant("Beta SA")]
    await d.start_api()
    workers = list(await asyncio.gather(d.start_worker("worker-1"), d.start_worker("worker-2")))
    t0 = time.monotonic()
    ids = await submit_all(d, tenants, job_mix(pdfs, n, scans))
    victim, killed_job = await kill_mid_job(workers)
    elapsed = await d.wait_all_finished(len(ids), timeout=180)
    outcome = await check_outcome(d, ids, tenants)
    conn = await d.admin()
    try:
        attempts = await conn.fetchval("SELECT attempts FROM jobs WHERE id = $1", uuid.UUID(killed_job))
    finally:
        await conn.close()
    assert attempts >= 2, "the job held by the killed worker was claimed again"
    report = {
        "jobs": n,
        "scans": scans,
        "killed": victim.name,
        "seconds": round(time.monotonic() - t0, 1),
        "finish_after_kill_s": round(elapsed, 1),
        **outcome,
    }
    print(f"\nacceptance: {report}")
    return report


async def test_production_flow_redis(deployment: Deployment, pdfs: dict[str, bytes]) -> None:
    await _flow(deployment, pdfs, n=40, scans=4)


async def test_production_flow_kafka(deployment: Deployment, pdfs: dict[str, bytes]) -> None:
    topic = unique("ctk-flow-")
    deployment.env["CONTRACKT_QUEUE_URL"] = f"kafka://{service('KAFKA')}/{topic}?partitions=4&group={topic}"
    await _flow(deployment, pdfs, n=30, scans=4)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A redis-server of our own (never the shared one) that the test may kill and restart."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield port, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


def start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("private redis-server did not start")


async def test_redis_restart_loses_queue_reconciler_recovers(
    deployment: Deployment,
    pdfs: dict[str, bytes],
    private_redis: tuple[int, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    port, procs = private_redis
    procs.append(start_redis(port, tmp_path))
    deployment.env["CONTRACKT_QUEUE_URL"] = f"redis://127.0.0.1:{port}/0/ctk-restart"
    tenants = [deployment.tenant("Gama"), deployment.tenant("Delta")]
    await deployment.start_api()
    await deployment.start_worker("worker-1")
    t0 = time.monotonic()
    ids = await submit_all(deployment, tenants, job_mix(pdfs, 12, 2))
    # Redis dies with jobs queued and comes back empty (no persistence).
    procs[0].kill()
    procs[0].wait(5)
    procs.append(start_redis(port, tmp_path))
    restarted = time.monotonic() - t0
    elapsed = await deployment.wait_all_finished(len(ids), timeout=120)
    await check_outcome(deployment, ids, tenants)
    requeued = sum(
        line.get("jobs_requeued", 0)
        for p in deployment.procs
        for line in p.lines()
        if line.get("event") == "sweep.done"
    )
    assert requeued >= 1, "the reconciler re-enqueued the jobs Redis lost"
    print(
        f"\nredis restart: jobs={len(ids)} restarted_at={restarted:.1f}s finished_after={elapsed:.1f}s "
        f"requeued={requeued}"
    )
