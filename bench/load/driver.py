"""The load driver: submissions at a fixed rate (open loop) or N at a time (closed loop), every
POST status counted, and finished jobs found without polling each job.

End-to-end latency is the job's own ``completed_at`` (the server's clock) minus the wall-clock
time the client started the POST: client and server share one machine and one clock, so the
figure does not depend on how often the driver looks. Finished jobs are found by listing each
tenant's unfinished jobs (``GET /v1/jobs?status=pending|processing``) twice a second; a tracked
job missing from both lists is read once (``GET /v1/jobs/{id}``) to confirm it. A few requests
a second instead of one per job in flight keeps the driver's own load on the API small.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

ALLOWED = frozenset({"202", "429", "503"})  # what POST /v1/extract may answer under overload
FINISHED = ("completed", "failed")


@dataclass
class Job:
    key: str
    job_id: str
    kind: str
    pages: int
    submitted: float  # time.time() when the POST started
    status: str = "pending"
    done_at: float | None = None  # the server's completed_at, as a Unix time

    @property
    def e2e_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.submitted


@dataclass
class Outcome:
    """What one batch of submissions got back."""

    statuses: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)  # "429:too_many_uploads", from the problem's code
    ingest_s: list[float] = field(default_factory=list)  # POST -> 202 only
    jobs: list[Job] = field(default_factory=list)
    sent: int = 0
    wall_s: float = 0.0


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


class Driver:
    def __init__(self, http: httpx.AsyncClient, keys: list[str], path: str = "/v1/extract") -> None:
        self.http, self.keys, self.path = http, keys, path
        self._turn = 0
        self.poll_statuses: Counter[str] = Counter()

    async def submit(self, doc: bytes, kind: str, pages: int, out: Outcome, track: bool = True) -> None:
        key = self.keys[self._turn % len(self.keys)]
        self._turn += 1
        submitted, started = time.time(), time.perf_counter()
        try:
            r = await self.http.post(
                self.path, files={"file": ("document.pdf", doc, "application/pdf")}, headers={"X-API-Key": key}
            )
        except httpx.HTTPError as exc:
            out.statuses[f"error:{type(exc).__name__}"] += 1
            return
        elapsed = time.perf_counter() - started
        out.statuses[str(r.status_code)] += 1
        if r.status_code in (429, 503):
            try:
                out.refusals[f"{r.status_code}:{r.json().get('code')}"] += 1
            except ValueError:
                out.refusals[f"{r.status_code}:not-json"] += 1
        if r.status_code == 202:
            out.ingest_s.append(elapsed)
            if track:
                out.jobs.append(Job(key, r.json()["job_id"], kind, pages, submitted))

    async def open_loop(
        self, doc: bytes, kind: str, pages: int, rate: float, duration: float, max_open: int = 256
    ) -> Outcome:
        """``rate`` POSTs a second for ``duration`` seconds, whatever the answers take; beyond
        ``max_open`` requests still open the driver itself is saturated (counted, not sent)."""
        out = Outcome()
        open_: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        n = 0
        while n / rate < duration:
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            if len(open_) >= max_open:
                out.statuses["client_saturated"] += 1
                continue
            task = asyncio.create_task(self.submit(doc, kind, pages, out))
            open_.add(task)
            task.add_done_callback(open_.discard)
        await asyncio.gather(*open_)
        out.sent, out.wall_s = n, time.perf_counter() - started
        return out

    async def closed_loop(
        self,
        doc: bytes,
        kind: str,
        pages: int,
        concurrency: int,
        count: int | None = None,
        duration: float | None = None,
        track: bool = True,
    ) -> Outcome:
        """``concurrency`` clients, each sending the next POST when its last one is answered,
        until ``count`` were sent or ``duration`` seconds passed."""
        out = Outcome()
        started = time.perf_counter()
        left = [count if count is not None else 1 << 62]

        async def client() -> None:
            while left[0] > 0 and (duration is None or time.perf_counter() - started < duration):
                left[0] -= 1
                out.sent += 1
                await self.submit(doc, kind, pages, out, track)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        out.wall_s = time.perf_counter() - started
        return out

    async def _listing(self, key: str, status: str | None) -> list[dict[str, Any]] | None:
        """Every job of ``key``'s tenant (only those in ``status`` if given); None when a page is refused."""
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 100}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            r = await self.http.get("/v1/jobs", params=params, headers={"X-API-Key": key})
            self.poll_statuses[str(r.status_code)] += 1
            if r.status_code != 200:
                return None
            body = r.json()
            jobs += body["jobs"]
            cursor = body["next_cursor"]
            if not cursor:
                return jobs

    async def _unfinished(self, key: str) -> set[str] | None:
        ids: set[str] = set()
        for status in ("pending", "processing"):
            jobs = await self._listing(key, status)
            if jobs is None:
                return None
            ids.update(j["job_id"] for j in jobs)
        return ids

    async def server_jobs(self) -> Counter[str]:
        """Every job the server holds for the driver's tenants, by status (a cross-check: a job
        the server created whose 202 the driver never read would show up here only)."""
        out: Counter[str] = Counter()
        for key in self.keys:
            jobs = await self._listing(key, None)
            if jobs is None:
                raise RuntimeError("GET /v1/jobs was refused: the server's jobs could not be counted")
            out.update(j["status"] for j in jobs)
        return out

    async def _confirm(self, job: Job, gate: asyncio.Semaphore) -> None:
        async with gate:
            r = await self.http.get(f"/v1/jobs/{job.job_id}", headers={"X-API-Key": job.key})
        self.poll_statuses[str(r.status_code)] += 1
        if r.status_code != 200:
            return
        body = r.json()
        if body["status"] in FINISHED:
            job.status = body["status"]
            if body.get("completed_at"):
                job.done_at = datetime.fromisoformat(body["completed_at"]).timestamp()

    async def wait_done(self, jobs: list[Job], timeout: float) -> float:
        """Until every job in ``jobs`` has finished or ``timeout`` passed; returns the seconds waited."""
        started = time.monotonic()
        gate = asyncio.Semaphore(16)
        pending = {j.job_id: j for j in jobs if j.status not in FINISHED}
        while pending and time.monotonic() - started < timeout:
            for key in {j.key for j in pending.values()}:
                unfinished = await self._unfinished(key)
                if unfinished is None:
                    continue  # the listing was refused (e.g. 429): look again next round
                candidates = [j for j in pending.values() if j.key == key and j.job_id not in unfinished]
                await asyncio.gather(*(self._confirm(j, gate) for j in candidates))
            pending = {i: j for i, j in pending.items() if j.status not in FINISHED}
            if pending:
                await asyncio.sleep(0.5)
        return time.monotonic() - started
