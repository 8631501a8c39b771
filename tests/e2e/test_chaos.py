"""Chaos: jobs from two tenants while workers are SIGKILLed and Redis / PostgreSQL restart.

Topology (all private, loopback, started and stopped by this test only):
``contrackt api`` + two ``contrackt worker`` processes, a private ``redis-server``
on a free port (no persistence: a restart loses the stream, the database
reconciler must re-enqueue), and a private PostgreSQL cluster (``initdb`` +
``pg_ctl`` as user postgres in a temporary directory, on a free port; stopped
with ``-m immediate``).  The shared services (6379, 5432) are never touched.
Where a private PostgreSQL cannot be created, the test runs on SQLite and says
so loudly (PostgreSQL restarts are then skipped).

Afterwards: every accepted job reached exactly one terminal state, with exactly
one terminal audit row; no document is left in storage; another tenant's key
never reads a job.  ``CONTRACKT_CHAOS_SECONDS`` (default 45) and
``CONTRACKT_CHAOS_SEED`` tune the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import corpus_path
from tests.e2e.test_serve import BIN, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHAOS_S = float(os.environ.get("CONTRACKT_CHAOS_SECONDS", "45"))
SEED = int(os.environ.get("CONTRACKT_CHAOS_SEED", "6"))


class PrivatePostgres:
    """A throw-away cluster owned by user postgres; never the shared one."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="contrackt-chaos-pg-"))
        self.port = free_port()
        self.restarts = 0

    def _as_postgres(self, *cmd: str, timeout: float = 60) -> None:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=timeout)

    def create(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        self._as_postgres("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._as_postgres(
            "pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-t", "60", "-o", opts, "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.start()
        self.restarts += 1

    def destroy(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def service_url(self) -> str:
        return f"postgresql+asyncpg://contrackt_chaos:chaos-secret@127.0.0.1:{self.port}/contrackt_chaos"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import asyncpg

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="contrackt_chaos")
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(run())


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise AssertionError("private redis did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.start()
        self.restarts += 1


class Fleet:
    """The contrackt processes of this test (each in its own process group)."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills = 0

    def spawn(self, name: str, *args: str) -> None:
        env = dict(self.env)
        if args[0] == "worker":  # each worker's health and metrics listener on a port of its own
            env["CONTRACKT_WORKER_LISTEN"] = f"127.0.0.1:{free_port()}"
        with (self.logdir / f"{name}.log").open("ab") as sink:
            self.procs[name] = subprocess.Popen(
                [str(BIN), *args], env=env, stdout=sink, stderr=sink, start_new_session=True
            )

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.kills += 1

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_chaos_every_job_ends_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    home = tmp_path / "home"
    home.mkdir()
    redis = PrivateRedis(tmp_path)
    pg: PrivatePostgres | None = PrivatePostgres()
    try:
        pg.create()
    except Exception as exc:
        print(f"\n!!! PRIVATE POSTGRESQL UNAVAILABLE ({exc!r}): running on SQLite, NO PostgreSQL restarts !!!")
        pg.destroy()
        pg = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACKT_")}
    env.update(
        CONTRACKT_HOME=str(home),
        CONTRACKT_WORKERS="1",
        CONTRACKT_CONCURRENCY="2",
        CONTRACKT_RATE_LIMIT_STATUS="100000/minute",
        CONTRACKT_RATE_LIMIT_EXTRACT="100000/minute",
        CONTRACKT_SWEEP_INTERVAL_SECONDS="1",
        CONTRACKT_STALE_PENDING_SECONDS="5",
        CONTRACKT_JOB_TIMEOUT_SECONDS="60",
        CONTRACKT_LEASE_SECONDS="8",
        CONTRACKT_SHUTDOWN_GRACE_SECONDS="3",
        CONTRACKT_LOG_FORMAT="json",
        # A job failing on its last attempt with a retryable code would keep its document for a
        # replay (ADR 0013); this test checks that storage empties, so destroy at failure.
        CONTRACKT_REPLAY_WINDOW_HOURS="0",
    )
    if pg is not None:
        env["CONTRACKT_DATABASE_URL"] = pg.service_url()
        env["CONTRACKT_DATABASE_ADMIN_URL"] = pg.admin_url()
    try:
        run_chaos(rng, env, home, tmp_path, redis, pg)
    finally:
        if pg is not None:
            pg.destroy()


def run_chaos(
    rng: random.Random,
    env: dict[str, str],
    home: Path,
    tmp_path: Path,
    redis: PrivateRedis,
    pg: PrivatePostgres | None,
) -> None:
    fleet = Fleet(env, tmp_path)
    accepted: dict[str, tuple[str, str]] = {}  # job_id -> (tenant key, other tenant's key)
    submit_errors: Counter[int | str] = Counter()
    try:
        redis.start()
        env["CONTRACKT_QUEUE_URL"] = f"redis://127.0.0.1:{redis.port}/0"
        cli(env, "migrate")
        ka = json.loads(cli(env, "tenant", "create", "alpha", "--json"))["api_key"]
        kb = json.loads(cli(env, "tenant", "create", "beta", "--json"))["api_key"]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        fleet.spawn("api", "api", "--port", str(port))
        fleet.spawn("worker-0", "worker")
        fleet.spawn("worker-1", "worker")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/v1/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        born = corpus_path("synthetic", "born_digital.pdf").read_bytes()

        client = httpx.Client(base_url=base, timeout=30)

        def submit(n: int) -> None:
            key, other = (ka, kb) if n % 2 == 0 else (kb, ka)
            data = born  # small documents: the point is the faults, not OCR time
            try:
                r = client.post("/v1/extract", headers={"X-API-Key": key}, content=data)
            except httpx.HTTPError as exc:
                submit_errors[type(exc).__name__] += 1
                return
            if r.status_code == 202:
                accepted[r.json()["job_id"]] = (key, other)
            else:
                submit_errors[r.status_code] += 1

        for n in range(12):
            submit(n)
        assert len(accepted) == 12

        # ---- chaos
        actions: Counter[str] = Counter()
        n = 12
        t_end = time.monotonic() + CHAOS_S
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(1.5, 4.0))
            choice = rng.choices(["kill", "redis", "pg"], weights=[4, 1, 1 if pg is not None else 0])[0]
            if choice == "kill":
                name = rng.choice(["worker-0", "worker-1"])
                fleet.kill(name)
                time.sleep(rng.uniform(0.2, 2.0))
                fleet.spawn(name, "worker")
            elif choice == "redis":
                redis.restart()
            elif pg is not None:
                pg.restart()
            actions[choice] += 1
            for _ in range(2):
                submit(n)
                n += 1
        print(f"\nchaos actions: {dict(actions)}; submissions refused during chaos: {dict(submit_errors)}")

        # ---- recovery: everything up, every accepted job must end
        for name in ("worker-0", "worker-1"):
            if fleet.procs[name].poll() is not None:
                fleet.spawn(name, "worker")
        final: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 180
        while len(final) < len(accepted) and time.monotonic() < deadline:
            for job_id, (key, _) in accepted.items():
                if job_id in final:
                    continue
                try:
                    r = client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200 and r.json()["status"] in ("completed", "failed"):
                    final[job_id] = r.json()
            time.sleep(0.5)
        missing = set(accepted) - set(final)
        outcomes = Counter(
            b["status"] if b["status"] == "completed" else f"failed:{b['error']['code']}" for b in final.values()
        )
        pg_restarts = pg.restarts if pg else "SKIPPED (no private PG)"
        print(
            f"jobs accepted: {len(accepted)}; outcomes: {dict(outcomes)}; worker kills: {fleet.kills}; "
            f"redis restarts: {redis.restarts}; postgres restarts: {pg_restarts}"
        )
        assert not missing, f"{len(missing)} accepted jobs never reached a terminal state"

        # no cross-tenant read
        for job_id, (_, other) in accepted.items():
            assert client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": other}).status_code == 404
            assert client.get(f"/v1/jobs/{job_id}/result", headers={"X-API-Key": other}).status_code == 404
        # completed jobs have a readable result for their owner
        for job_id, body in final.items():
            if body["status"] == "completed":
                r = client.get(f"/v1/jobs/{job_id}/result", headers={"X-API-Key": accepted[job_id][0]})
                assert r.status_code == 200, r.text
        client.close()

        # storage empties once the sweeper has run over every terminal job
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and list((home / "blobs").rglob("*.enc")):
            time.sleep(0.5)
        left = list((home / "blobs").rglob("*.enc"))
    finally:
        fleet.stop_all()
        redis.stop()

    sql = "SELECT job_id, count(*) FROM audit_logs WHERE action IN ('COMPLETED', 'FAILED') GROUP BY job_id"
    if pg is not None:
        rows = pg.query(sql)
        states = pg.query("SELECT id, status FROM jobs")
    else:
        db = sqlite3.connect(home / "contrackt.db")
        rows = db.execute(sql).fetchall()
        states = db.execute("SELECT id, status FROM jobs").fetchall()
        db.close()
    terminal_rows = {str(j).replace("-", ""): int(c) for j, c in rows}
    want = {j.replace("-", ""): 1 for j in accepted}
    assert {j: terminal_rows.get(j, 0) for j in want} == want, "a job has no, or more than one, terminal audit row"
    by_state = Counter(s for _, s in states)
    print(f"job rows by state: {dict(by_state)}")
    assert set(by_state) <= {"completed", "failed"}
    assert left == [], f"{len(left)} documents left in storage"
