"""Where the bottleneck moves past the OCR workers (docs/capacity.md): the database's audit
chain and the object store, measured on the services in ``.test-services/env``.

    .venv/bin/python -m bench.capacity [--appends 400] [--rows 1000000] [--big 100000] [--json out.json]

In a fresh PostgreSQL database (its own roles, migrated, dropped at the end):

1. audit appends per second through ``SqlAuditRepository.append`` (one transaction each, as
   the services do): one tenant one at a time; one tenant 8 at a time (they queue on the
   per-tenant advisory lock); 8 tenants 8 at a time (the baseline: no shared lock);
2. ``--rows`` audit rows bulk-loaded with COPY (one tenant with a valid ``--big``-row chain,
   one with a valid 1,000-row chain, the rest spread over 1,000-row filler tenants), then:
   the audit read receipts made until 2026-11-27 (the tenant's whole chain, keeping its job's
   rows), the read they make now (``AuditRepository.job_events``: by ``job_id``, ``ix_audit_job``), ``audit verify``
   of one tenant, and appends again with the table full; the small tenant's read is also
   timed before the load, so table size and chain length can be told apart;
3. the object store (moto S3 from ``.test-services/env``; moto is not S3, the figure is the
   client's and the loopback's cost): put, get and delete of a 64 KiB object.

Times: median (p50) and p99 of repeated runs in one process; the machine is shared: quote
the load average printed with them.
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
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.load.driver import pct as _pct
from bench.stack import REPO, load

FILLER_CHAIN = 1000


def pct(values: list[float], q: float) -> float:
    return _pct(values, q) or 0.0


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return {"p50_ms": round(statistics.median(times) * 1000, 2), "p99_ms": round(pct(times, 99) * 1000, 2)}


async def add_tenants(c: Any, ids: list[str]) -> None:
    from contrackt.adapters.db.tables import tenants

    for tid in ids:
        async with c.uow(tid) as u:
            await u.conn.execute(tenants.insert().values(id=tid, name="bench", created_at=datetime.now(UTC)))


async def appends(c: Any, tenant_ids: list[str], total: int, concurrency: int) -> dict[str, Any]:
    """``total`` appends by ``concurrency`` tasks, task i writing to ``tenant_ids[i % len]``."""
    from contrackt.domain.audit import AuditAction
    from contrackt.domain.ids import new_id
    from contrackt.services.audit import record

    times: list[float] = []
    left = [total]

    async def task(i: int) -> None:
        tid = tenant_ids[i % len(tenant_ids)]
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            async with c.uow(tid) as u:
                await record(u, c.clock, tid, AuditAction.PROCESSING, job_id=new_id(), attempt=1)
            times.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(task(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "tenants": len(tenant_ids),
        "concurrency": concurrency,
        "appends": total,
        "per_s": round(total / wall, 1),
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(pct(times, 99) * 1000, 2),
    }


def filler(n_rows: int, start: datetime) -> Iterator[tuple[Any, ...]]:
    """Rows of 1,000-row filler chains (hashes not linked: only their volume matters)."""
    tenant = uuid.uuid4()
    for i in range(n_rows):
        if i % FILLER_CHAIN == 0:
            tenant = uuid.uuid4()
        seq = i % FILLER_CHAIN + 1
        yield (
            tenant,
            seq,
            uuid.uuid4(),
            "PROCESSING",
            start + timedelta(seconds=i),
            '{"attempt": 1}',
            "0" * 64,
            "1" * 64,
        )


async def copy_rows(conn: Any, rows: Iterator[tuple[Any, ...]], batch: int = 50_000) -> None:
    columns = ["tenant_id", "seq", "job_id", "action", "at", "details", "prev_hash", "row_hash"]
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= batch:
            await conn.copy_records_to_table("audit_logs", records=chunk, columns=columns)
            chunk = []
    if chunk:
        await conn.copy_records_to_table("audit_logs", records=chunk, columns=columns)


async def valid_chain(conn: Any, tenant_id: str, n: int, start: datetime) -> str:
    """A real chain of ``n`` rows (bench.operations' generator) and its tenant's head; returns a job id in it."""
    from bench.operations import chain_rows

    rows, (seq, head) = chain_rows(tenant_id, n, start)
    await copy_rows(
        conn,
        (
            (
                uuid.UUID(r["tenant_id"]),
                r["seq"],
                uuid.UUID(r["job_id"]),
                r["action"],
                r["at"],
                json.dumps(r["details"]),
                r["prev_hash"],
                r["row_hash"],
            )
            for r in rows
        ),
    )
    await conn.execute("UPDATE tenants SET audit_seq = $2, audit_head = $3 WHERE id = $1::uuid", tenant_id, seq, head)
    return str(rows[n // 2]["job_id"])


async def audit_reads(c: Any, tenant_id: str, job_id: str, repeat: int) -> dict[str, Any]:

    from contrackt.services.audit import verify

    async def receipt_read() -> None:  # what ReceiptService.issue read before it used job_events
        async with c.uow(tenant_id) as u:
            rows = [r for r in await u.audit.chain(tenant_id) if r.event.job_id == job_id]
        assert rows, "the job's audit rows were not found"

    async def by_job() -> None:  # what ReceiptService.issue reads now
        async with c.uow(tenant_id) as u:
            found = await u.audit.job_events(tenant_id, job_id)
        assert found

    async def verify_one() -> None:
        [report] = await verify(c.uow, tenant_id)
        assert report.problems == [], report.problems[:3]

    return {
        "receipt_chain_read": await timed(receipt_read, repeat),
        "by_job_id": await timed(by_job, repeat * 4),
        "audit_verify": await timed(verify_one, max(1, repeat // 2)),
    }


async def pg_part(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    from tests.contract.services import FreshPostgres

    from contrackt.bootstrap import build
    from contrackt.domain.ids import new_id

    pg = FreshPostgres()
    await asyncio.to_thread(pg.migrate)
    out: dict[str, Any] = {"database": "fresh, dropped afterwards", "load_start": load()}
    with tempfile.TemporaryDirectory() as home:
        c = build(pg.settings(home=Path(home)))
        admin = await asyncpg.connect(pg.dsn(pg.admin_target_url))
        try:
            one, small, big = new_id(), new_id(), new_id()
            many = [new_id() for _ in range(8)]
            await add_tenants(c, [one, small, big, *many])
            out["appends_empty"] = [
                await appends(c, [one], args.appends, 1),
                await appends(c, [one], args.appends, 8),
                await appends(c, many, args.appends, 8),
            ]
            old = datetime.now(UTC) - timedelta(days=30)
            small_job = await valid_chain(admin, small, FILLER_CHAIN, old)
            out["small_tenant_before_load"] = await audit_reads(c, small, small_job, args.repeat)
            started = time.perf_counter()
            big_job = await valid_chain(admin, big, args.big, old)
            rest = args.rows - await admin.fetchval("SELECT count(*) FROM audit_logs")
            await copy_rows(admin, filler(max(0, rest), old))
            await admin.execute("ANALYZE audit_logs")
            out["bulk_load_s"] = round(time.perf_counter() - started, 1)
            out["audit_rows"] = await admin.fetchval("SELECT count(*) FROM audit_logs")
            out["table_mb"] = round(await admin.fetchval("SELECT pg_total_relation_size('audit_logs')") / 2**20, 1)
            out["small_tenant_rows"] = FILLER_CHAIN
            out["small_tenant"] = await audit_reads(c, small, small_job, args.repeat)
            out["big_tenant_rows"] = args.big
            out["big_tenant"] = await audit_reads(c, big, big_job, max(2, args.repeat // 4))
            out["appends_full"] = [await appends(c, [one], args.appends, 1), await appends(c, [one], args.appends, 8)]
            out["load_end"] = load()
        finally:
            await admin.close()
            await c.close()
            await pg.drop()
    return out


async def s3_part(n: int) -> dict[str, Any]:
    import aioboto3
    from tests.contract.services import service, unique

    endpoint, bucket = service("S3"), unique("ctk-bench-cap-")
    body = os.urandom(64 * 1024)
    async with aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint) as s3:
        await s3.create_bucket(Bucket=bucket)
        try:
            keys = [f"t/{i}.enc" for i in range(n)]
            it = iter(keys)

            async def put() -> None:
                await s3.put_object(Bucket=bucket, Key=next(it), Body=body)

            async def get() -> None:
                obj = await s3.get_object(Bucket=bucket, Key=keys[0])
                await obj["Body"].read()

            dels = iter(keys)

            async def delete() -> None:
                await s3.delete_object(Bucket=bucket, Key=next(dels))

            return {
                "object_kb": 64,
                "put": await timed(put, n),
                "get": await timed(get, n),
                "delete": await timed(delete, n),
            }
        finally:
            listing = await s3.list_objects_v2(Bucket=bucket)
            for obj in listing.get("Contents", []):
                await s3.delete_object(Bucket=bucket, Key=obj["Key"])
            await s3.delete_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=400, help="audit appends per measurement")
    parser.add_argument("--rows", type=int, default=1_000_000, help="audit rows in the table for the reads")
    parser.add_argument("--big", type=int, default=100_000, help="rows in the big tenant's chain")
    parser.add_argument("--repeat", type=int, default=20, help="runs of each read")
    parser.add_argument("--s3", type=int, default=100, help="objects put, read and deleted")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": load()}
    result["postgres"] = asyncio.run(pg_part(args))
    result["s3_moto"] = asyncio.run(s3_part(args.s3))
    result["load_after"] = load()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
