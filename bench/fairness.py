"""Fair share, measured on real processes and real OCR: tenant A submits many scanned pages,
then tenant B one born-digital document; how long does B wait?

    .venv/bin/python -m bench.fairness                       # embedded `contrackt serve`, defaults
    .venv/bin/python -m bench.fairness --mode production     # `contrackt api` + 2 `contrackt worker`
    .venv/bin/python -m bench.fairness --scans 10 --json out.json

Embedded: a fresh CONTRACKT_HOME, every setting at its default. Production: PostgreSQL (a
fresh database), Redis Streams, Redis results, moto S3 from ``.test-services/env``
(``scripts/services.sh``), every fair-share, lease and concurrency setting at its default.
A submits ``--scans`` copies of ``synthetic/scan_hard.pdf`` (10 pages each); once A's
first job is being processed, B submits ``synthetic/born_digital.pdf`` (10 text-layer
pages). Printed: B's latency (submit -> completed) and how much of A was still unfinished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "synthetic"
BIN = Path(sys.executable).with_name("contrackt")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def scenario(base: str, a_key: str, b_key: str, scans: int) -> dict[str, Any]:
    scan = (CORPUS / "scan_hard.pdf").read_bytes()
    born = (CORPUS / "born_digital.pdf").read_bytes()
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def post(key: str, doc: bytes) -> str:
            headers = {"X-API-Key": key, "Content-Type": "application/pdf"}
            r = await http.post("/v1/extract", content=doc, headers=headers)
            assert r.status_code == 202, r.text
            job_id: str = r.json()["job_id"]
            return job_id

        async def status(key: str, job_id: str) -> str:
            body = (await http.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key})).json()
            state: str = body["status"]
            return state

        a_jobs = [await post(a_key, scan) for _ in range(scans)]
        while await status(a_key, a_jobs[0]) == "pending":
            await asyncio.sleep(0.2)
        started = time.monotonic()
        b_job = await post(b_key, born)
        while (state := await status(b_key, b_job)) not in ("completed", "failed"):
            await asyncio.sleep(0.1)
        latency = time.monotonic() - started
        a_states = [await status(a_key, j) for j in a_jobs]
    return {
        "b_status": state,
        "b_latency_s": round(latency, 2),
        "a_jobs": scans,
        "a_pages": scans * 10,
        "a_completed_when_b_done": sum(s == "completed" for s in a_states),
    }


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    if args[0] == "worker":  # several workers on one host: none needs the health listener here
        env = {**env, "CONTRACKT_WORKER_LISTEN": "off"}
    with log.open("ab") as sink:
        return subprocess.Popen([str(BIN), *args], env=env, stdout=sink, stderr=sink, start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def tenant(env: dict[str, str], name: str) -> str:
    out = subprocess.run([str(BIN), "tenant", "create", name, "--json"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    key: str = json.loads(out.stdout.strip().splitlines()[-1])["api_key"]
    return key


def wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a contrackt process exited during start-up")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} never answered 200")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(CONTRACKT_HOME=str(home), CONTRACKT_LOG_FORMAT="json")
    return env


def embedded(tmp: Path, scans: int) -> dict[str, Any]:
    env = base_env(tmp / "home")
    a, b = tenant(env, "A"), tenant(env, "B")
    port = free_port()
    procs = [start(["serve", "--port", str(port)], env, tmp / "serve.log")]
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/health/ready", procs)
        return asyncio.run(scenario(f"http://127.0.0.1:{port}", a, b, scans))
    finally:
        stop(procs)


def production(tmp: Path, scans: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests.contract.services import FreshPostgres, drop_redis_queue, service, unique

    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update({k: os.environ.get(k, v) for k, v in aws.items()})
    pg = FreshPostgres()
    pg.migrate()
    s3, redis = service("S3"), service("REDIS")
    bucket, stream = unique("ctk-bench-"), unique("ctk-bench-jobs-")

    async def bucket_ctl(create: bool) -> None:
        import aioboto3

        async with aioboto3.Session().client("s3", endpoint_url=s3) as client:
            if create:
                await client.create_bucket(Bucket=bucket)
                return
            listing = await client.list_objects_v2(Bucket=bucket)
            for obj in listing.get("Contents", []):
                await client.delete_object(Bucket=bucket, Key=obj["Key"])
            await client.delete_bucket(Bucket=bucket)

    asyncio.run(bucket_ctl(True))
    env = base_env(tmp / "home")
    env.update(
        aws,
        CONTRACKT_DATABASE_URL=pg.service_url,
        CONTRACKT_STORAGE_URL=f"s3://{bucket}/docs",
        CONTRACKT_S3_ENDPOINT_URL=s3,
        CONTRACKT_QUEUE_URL=f"{redis}/0/{stream}",
        CONTRACKT_RESULTS_URL=f"{redis}/0",
        CONTRACKT_RATE_LIMIT_URL=f"{redis}/0",
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, b = tenant(env, "A"), tenant(env, "B")
        port = free_port()
        procs.append(start(["api", "--port", str(port)], env, tmp / "api.log"))
        for i in range(2):
            procs.append(start(["worker"], env, tmp / f"worker-{i}.log"))
        wait_ready(f"http://127.0.0.1:{port}/v1/health/live", procs)
        deadline = time.monotonic() + 300
        for i in range(2):
            log = tmp / f"worker-{i}.log"
            while "worker.started" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"worker {i} did not start")
                time.sleep(0.5)
        return asyncio.run(scenario(f"http://127.0.0.1:{port}", a, b, scans))
    finally:
        stop(procs)
        asyncio.run(drop_redis_queue(redis, stream))
        asyncio.run(bucket_ctl(False))
        asyncio.run(pg.drop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["embedded", "production"], default="embedded")
    parser.add_argument("--scans", type=int, default=10, help="copies of scan_hard.pdf (10 pages each) from A")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ctk-fair-"))
    try:
        before = load()
        row = (embedded if args.mode == "embedded" else production)(tmp, args.scans)
        row.update(mode=args.mode, load_before=before, load_after=load(), cpus=os.cpu_count())
    finally:
        if args.keep:
            print(f"logs: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
