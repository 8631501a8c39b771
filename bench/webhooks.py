"""Webhook delivery: throughput and latency to a loopback receiver, by dispatcher concurrency, and what
queueing the events adds to the transaction that finishes a job.

    .venv/bin/python -m bench.webhooks                       # 200 events, receivers answering at once / after 100 ms
    .venv/bin/python -m bench.webhooks --events 500 --json out.json

Embedded backends (SQLite, local keys) in a temporary home; one tenant, one endpoint on 127.0.0.1
(CONTRACKT_WEBHOOK_ALLOW_PRIVATE), real HTTP through the guarded transport. Each run queues
``--events`` events at once, then one dispatcher delivers them; the baseline in the same run is
concurrency 1 (one delivery at a time). Latency is from the event's creation to its arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.webhook_receiver import Receiver

from contrackt.adapters.db.migrate import upgrade
from contrackt.bootstrap import Container, build
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.services.webhooks import emit_job_event
from contrackt.settings import Settings


async def _queue(c: Container, tenant_id: str, n: int) -> dict[str, float]:
    """Queue n job.completed events; their creation times (monotonic) by job id."""
    created: dict[str, float] = {}
    for _ in range(n):
        job = Job(id=new_id(), tenant_id=tenant_id, status=JobStatus.PROCESSING, created_at=c.clock.now())
        async with c.uow(tenant_id) as uow:
            await emit_job_event(uow, c.clock, job, "job.completed", None)
        created[job.id] = time.monotonic()
    return created


async def deliver_run(home: Path, events: int, concurrency: int, stall_s: float) -> dict[str, Any]:
    settings = Settings(
        home=home, webhook_allow_private=True, webhook_max_concurrency=concurrency, webhook_timeout_seconds=10
    )
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    try:
        with Receiver(stall_s=stall_s) as rx:
            tenant_id = (await c.tenants.create(f"bench-{concurrency}-{stall_s}")).tenant_id
            await c.webhooks.add(tenant_id, rx.url(), ["job.completed"])
            created = await _queue(c, tenant_id, events)
            d = c.webhook_dispatcher()
            d.per_tenant = concurrency  # one tenant here: let it use every slot
            started = time.monotonic()
            while len(rx.all()) < events:
                await d.step()
                await asyncio.sleep(0.005)
            await d.drain()
            took = time.monotonic() - started
            got = rx.all()
        latencies = sorted(r.at - created[json.loads(r.body)["data"]["job_id"]] for r in got)
        return {
            "concurrency": concurrency,
            "receiver_stall_ms": int(stall_s * 1000),
            "events": events,
            "received": len(got),
            "distinct_ids": len({r.headers["webhook-id"] for r in got}),
            "seconds": round(took, 3),
            "deliveries_per_s": round(len(got) / took, 1),
            "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "latency_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        }
    finally:
        await c.close()


async def emit_cost(home: Path, jobs: int) -> dict[str, Any]:
    """Time of a finishing-like transaction (one job row update) with 0 and with 1 and 5 endpoints."""
    settings = Settings(home=home, webhook_allow_private=True)
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    out: dict[str, Any] = {}
    try:
        for endpoints in (0, 1, 5):
            tenant_id = (await c.tenants.create(f"emit-{endpoints}")).tenant_id
            for i in range(endpoints):
                await c.webhooks.add(tenant_id, f"http://127.0.0.1:9/h{i}", ["job.completed"])
            samples = []
            for _ in range(jobs):
                job = Job(id=new_id(), tenant_id=tenant_id, status=JobStatus.PROCESSING, created_at=c.clock.now())
                t0 = time.perf_counter()
                async with c.uow(tenant_id) as uow:
                    await uow.jobs.count_unfinished(tenant_id)  # stands for the job's own update
                    await emit_job_event(uow, c.clock, job, "job.completed", None)
                samples.append(time.perf_counter() - t0)
            out[f"endpoints_{endpoints}_ms_p50"] = round(statistics.median(samples) * 1000, 3)
    finally:
        await c.close()
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="contrackt-bench-webhooks-") as tmp:
        for stall in (0.0, 0.1):
            for concurrency in (1, 8):
                home = Path(tmp) / f"c{concurrency}-s{stall}"
                run = await deliver_run(home, args.events, concurrency, stall)
                runs.append(run)
                print(json.dumps(run))
        cost = await emit_cost(Path(tmp) / "emit", args.jobs)
        print(json.dumps({"finishing_transaction": cost}))
    return {"deliveries": runs, "finishing_transaction": cost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=200, help="transactions timed for the emission cost")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
