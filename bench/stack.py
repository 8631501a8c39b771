"""Real Contrackt processes for benchmarks: the embedded ``contrackt serve``, or ``contrackt api``
plus N ``contrackt worker`` over PostgreSQL (a fresh database), Redis Streams, Redis results and
limits, and moto S3 from ``.test-services/env`` (``scripts/services.sh``).

Used by ``bench.fairness`` and ``bench.load``; everything created here (database, roles,
bucket, stream keys, processes) is removed when the context ends.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "synthetic"
BIN = Path(sys.executable).with_name("contrackt")
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    if args[0] == "worker":  # several workers on one host: none needs the health listener here
        env = {**env, "CONTRACKT_WORKER_LISTEN": "off"}
    with log.open("ab") as sink:
        return subprocess.Popen([str(BIN), *args], env=env, stdout=sink, stderr=sink, start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGKILL, grace: float = 10) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, sig)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
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


def wait_log(log: Path, marker: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while marker not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{log.name}: no {marker} within {timeout:.0f} s")
        time.sleep(0.3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_cpu_s(sid: int) -> float:
    """CPU seconds (user + system, reaped children included) of every live process in session ``sid``:
    a process started here with its children (uvicorn, the OCR zygote and its sandboxed children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
        if int(fields[3]) == sid:
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(CONTRACKT_HOME=str(home), CONTRACKT_LOG_FORMAT="json")
    return env


@dataclass
class Stack:
    """Running processes and how to reach them."""

    url: str
    env: dict[str, str]
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _started: int = 0

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the API (or ``serve``) process group, and all workers together."""
        out = {"api": session_cpu_s(self.procs[0].pid)}
        if self.workers:
            out["workers"] = sum(session_cpu_s(w.pid) for w in self.workers)
        return out

    def set_workers(self, n: int) -> None:
        """Production only: ``n`` worker processes from now on (extra ones stopped gracefully)."""
        while len(self.workers) > n:
            stop([self.workers.pop()], signal.SIGTERM, grace=40)
        logs = []
        while len(self.workers) < n:
            logs.append(self.tmp / f"worker-{self._started}.log")
            self._started += 1
            self.workers.append(start(["worker"], self.env, logs[-1]))
        for log in logs:
            wait_log(log, "worker.started")


@contextmanager
def embedded(tmp: Path, tenants: list[str], extra: dict[str, str] | None = None) -> Iterator[tuple[Stack, list[str]]]:
    """``contrackt serve`` in a fresh home; yields the stack and one API key per tenant name."""
    env = base_env(tmp / "home")
    env.update(extra or {})
    keys = [tenant(env, name) for name in tenants]
    port = free_port()
    stack = Stack(f"http://127.0.0.1:{port}", env, tmp)
    stack.procs.append(start(["serve", "--port", str(port)], env, tmp / "serve.log"))
    try:
        wait_ready(f"{stack.url}/v1/health/ready", stack.procs)
        yield stack, keys
    finally:
        stop(stack.procs)


@contextmanager
def production(
    tmp: Path, tenants: list[str], workers: int, extra: dict[str, str] | None = None
) -> Iterator[tuple[Stack, list[str]]]:
    """``contrackt api`` + ``workers`` workers over a fresh PostgreSQL database, a new Redis
    stream and a new S3 bucket; yields the stack and one API key per tenant name."""
    sys.path.insert(0, str(REPO))
    from tests.contract.services import FreshPostgres, drop_redis_queue, service, unique

    os.environ.update({k: os.environ.get(k, v) for k, v in AWS.items()})
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
            paginator = client.get_paginator("list_objects_v2")
            async for listing in paginator.paginate(Bucket=bucket):
                for obj in listing.get("Contents", []):
                    await client.delete_object(Bucket=bucket, Key=obj["Key"])
            await client.delete_bucket(Bucket=bucket)

    asyncio.run(bucket_ctl(True))
    env = base_env(tmp / "home")
    env.update(
        AWS,
        CONTRACKT_DATABASE_URL=pg.service_url,
        CONTRACKT_STORAGE_URL=f"s3://{bucket}/docs",
        CONTRACKT_S3_ENDPOINT_URL=s3,
        CONTRACKT_QUEUE_URL=f"{redis}/0/{stream}",
        CONTRACKT_RESULTS_URL=f"{redis}/0",
        CONTRACKT_RATE_LIMIT_URL=f"{redis}/0",
    )
    env.update(extra or {})
    port = free_port()
    stack = Stack(f"http://127.0.0.1:{port}", env, tmp)
    try:
        keys = [tenant(env, name) for name in tenants]
        stack.procs.append(start(["api", "--port", str(port)], env, tmp / "api.log"))
        wait_ready(f"{stack.url}/v1/health/live", stack.procs)
        stack.set_workers(workers)
        yield stack, keys
    finally:
        stop(stack.procs + stack.workers)
        asyncio.run(drop_redis_queue(redis, stream))
        asyncio.run(bucket_ctl(False))
        asyncio.run(pg.drop())
