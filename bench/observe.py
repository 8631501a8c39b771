"""What observing costs: reading the queue's figures for /metrics, and a scrape's size.

    .venv/bin/python -m bench.observe                            # memory, redis, kafka; 10 and 1000 tenants
    .venv/bin/python -m bench.observe --backends redis --tenants 10,1000,5000 --json out.json

1. ``stats()`` (depth + dead letters + oldest waiting age, docs/adr/0012-observability.md)
   against ``depth()`` alone, its baseline in the same run: median and worst of ``--reads``
   reads with ``--tenants`` tenants each holding one waiting message. Redis shares one reading
   of the age across the fleet (refreshed every 10 s): ``age_read_ms`` is that reading's cost.
2. ``/metrics`` through the API (httpx ASGI transport) with the queue's figures fresh
   (the cache disabled) and cached, and with a backend that hangs: the first scrape waits
   for the read's time limit, the ones within the cache window do not.
3. The exposition's size (bytes, series) by default and with the tenant label for ``--tenants``
   tenants that each ran a job: the cardinality cost an operator opts into.

Redis and Kafka come from ``.test-services/env`` (``scripts/services.sh``); each run uses a new
stream/topic and removes what it created (Redis). The machine is shared: compare the columns of
one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


async def timed(fn: Any, reads: int) -> tuple[float, float]:
    times = []
    for _ in range(reads):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, max(times) * 1000


async def queue_row(kind: str, tenants: int, reads: int) -> dict[str, Any]:
    from bench.queue import make
    from contrackt.domain.jobs import JobMessage

    name = f"ctk-bench-observe-{os.getpid()}-{int(time.time() * 1000)}"
    q = make(kind, name)
    try:
        for n in range(tenants):
            await q.publish(JobMessage(f"job-{n}", f"tenant-{n}", f"tenant-{n}/job-{n}.enc"))
        stats = await q.stats()  # warm-up (Kafka: probe consumers start)
        await q.depth()
        depth_ms = await timed(q.depth, reads)
        stats_ms = await timed(q.stats, reads)
        row: dict[str, Any] = {}
        if kind == "redis":
            q.age_ttl_s = 0.0  # the reading one process takes for the fleet once per window
            row["age_read_ms_p50"] = round((await timed(q.stats, min(reads, 10)))[0], 2)
        return {
            "backend": kind,
            "tenants": tenants,
            "depth": stats.depth,
            "depth_ms_p50": round(depth_ms[0], 2),
            "stats_ms_p50": round(stats_ms[0], 2),
            "stats_ms_max": round(stats_ms[1], 2),
            "stats/depth": round(stats_ms[0] / depth_ms[0], 1) if depth_ms[0] else None,
            **row,
        }
    finally:
        await q.close()
        if kind == "redis":
            sys.path.insert(0, str(REPO))
            from tests.contract.services import drop_redis_queue, service

            await drop_redis_queue(service("REDIS"), name)


async def scrape_rows(tenants: int) -> list[dict[str, Any]]:
    import httpx
    from tests.fakes import FakeExtractor, fake_pdf

    from contrackt.adapters.db.migrate import upgrade
    from contrackt.api.app import create_app
    from contrackt.bootstrap import build
    from contrackt.metrics import set_tenant_label
    from contrackt.queue_gauges import QUEUE_GAUGES
    from contrackt.settings import Settings
    from contrackt.worker.runtime import WorkerRuntime

    rows: list[dict[str, Any]] = []
    for labelled in (False, True):
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(
                home=Path(home),
                workers=2,
                metrics_tenant_label=labelled,
                rate_limit_extract="100000/minute",
                rate_limit_status="100000/minute",
            )
            await asyncio.to_thread(upgrade, settings.db_url)
            c = build(settings)
            app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
            async with app.router.lifespan_context(app):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http:
                    for n in range(tenants):
                        key = await c.tenants.create(f"t{n}")
                        await http.post("/v1/extract", headers={"X-API-Key": key.api_key}, content=fake_pdf("x"))
                    while await c.queue.depth():
                        await asyncio.sleep(0.05)

                    async def scrape() -> None:
                        r = await http.get("/metrics")
                        assert r.status_code == 200

                    QUEUE_GAUGES.ttl_s = 0.0
                    fresh = await timed(scrape, 20)
                    QUEUE_GAUGES.ttl_s = 10.0
                    cached = await timed(scrape, 20)
                    text = (await http.get("/metrics")).text
                    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
                    row: dict[str, Any] = {
                        "tenant_label": labelled,
                        "tenants": tenants,
                        "scrape_ms_fresh_p50": round(fresh[0], 2),
                        "scrape_ms_cached_p50": round(cached[0], 2),
                        "bytes": len(text.encode()),
                        "series": series,
                    }
                    if not labelled:

                        async def hangs() -> Any:
                            await asyncio.sleep(60)

                        c.queue.stats = hangs  # type: ignore[method-assign]
                        QUEUE_GAUGES.ttl_s = 10.0
                        QUEUE_GAUGES._tried_at = None  # the next scrape reads (and waits for the time limit)
                        row["scrape_ms_backend_hangs_first"] = round((await timed(scrape, 1))[0], 1)
                        row["scrape_ms_backend_hangs_cached_max"] = round((await timed(scrape, 10))[1], 2)
                    rows.append(row)
            await c.close()
    set_tenant_label(False)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(str(r.get(k, "")) for k in keys) for r in rows]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    queue = [
        await queue_row(kind, int(t), args.reads) for kind in args.backends.split(",") for t in args.tenants.split(",")
    ]
    print(table(queue), flush=True)
    scrape = await scrape_rows(args.scrape_tenants)
    print()
    print(table(scrape))
    return {"queue_stats": queue, "scrape": scrape, "load": os.getloadavg()}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="memory,redis,kafka")
    parser.add_argument("--tenants", default="10,1000", help="tenants with a waiting message (comma-separated)")
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--scrape-tenants", type=int, default=100, help="tenants that ran a job (scrape size)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}", flush=True)
    out = asyncio.run(main(args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
