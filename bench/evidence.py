"""What the evidence fixes cost (docs/adr/0009-evidence.md): S3 deletes on unversioned and versioned
buckets, the shared receipt key's load and signing, and the worker's claim check before storing a result.

    .venv/bin/python -m bench.evidence --s3 http://127.0.0.1:5599 [--n 200] [--json out.json]

Without ``--s3`` the S3 part is skipped. Every number is the median of ``--n`` runs (milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


async def median_ms(n: int, fn: Callable[[int], Awaitable[None]]) -> float:
    times = []
    for i in range(n):
        started = time.perf_counter()
        await fn(i)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


async def s3_deletes(endpoint: str, n: int) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return {
        "unversioned": await _deletes_on_a_bucket(endpoint, n, versioned=False),
        "versioned": await _deletes_on_a_bucket(endpoint, n, versioned=True),
    }


async def _deletes_on_a_bucket(endpoint: str, n: int, *, versioned: bool) -> dict[str, Any]:
    import aioboto3

    from contrackt.adapters.blob.s3 import S3BlobStore

    bucket = f"ctk-bench-{uuid.uuid4().hex[:10]}"
    setup = S3BlobStore.from_url(f"s3://{bucket}/docs", endpoint_url=endpoint)
    await setup.ensure_bucket()
    await setup.close()
    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        if versioned:
            await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        store = S3BlobStore.from_url(f"s3://{bucket}/docs", endpoint_url=endpoint)  # started after the switch
        calls: list[str] = []
        (await store._s3()).meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
        for i in range(n):
            await store.put(f"t/{i}.enc", b"x" * 4096)
        calls.clear()

        async def delete(i: int) -> None:
            await store.delete(f"t/{i}.enc")

        ms = await median_ms(n, delete)
        listing = await s3.list_object_versions(Bucket=bucket)
        await store.close()
        await s3.delete_bucket(Bucket=bucket)
    return {
        "delete_ms_median": ms,
        "calls_per_delete": round(len(calls) / n, 2),
        "versions_left": len(listing.get("Versions", [])) + len(listing.get("DeleteMarkers", [])),
    }


async def receipt_key(n: int) -> dict[str, Any]:
    from contrackt.adapters.db.migrate import upgrade
    from contrackt.bootstrap import build
    from contrackt.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="ctk-bench-"))
    settings = Settings(home=home)
    await asyncio.to_thread(upgrade, settings.db_url)
    first = build(settings)
    started = time.perf_counter()
    await first.signer.public_key_raw()  # generate, wrap, insert, read back, unwrap
    create_ms = (time.perf_counter() - started) * 1000
    second = build(settings)
    started = time.perf_counter()
    await second.signer.public_key_raw()  # read, unwrap
    load_ms = (time.perf_counter() - started) * 1000

    async def sign(_: int) -> None:
        await second.signer.sign(b"x" * 400)  # a receipt's canonical bytes are about this long

    sign_ms = await median_ms(n, sign)
    await first.close()
    await second.close()
    shutil.rmtree(home, ignore_errors=True)
    return {"create_ms": round(create_ms, 2), "load_ms": round(load_ms, 2), "sign_ms_median": sign_ms}


async def claim_check(n: int) -> dict[str, Any]:
    """The transaction the worker adds before storing a result (SQLite, embedded default)."""
    from contrackt.adapters.db.migrate import upgrade
    from contrackt.bootstrap import build
    from contrackt.domain.tenants import Principal
    from contrackt.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="ctk-bench-"))
    settings = Settings(home=home)
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    key = await c.tenants.create("bench")
    job = (await c.intake.submit(Principal(key.tenant_id, key.key_id), b"%PDF-1.7\n")).job
    now = c.clock.now()
    async with c.uow(key.tenant_id) as u:
        await u.jobs.claim(job.id, now, now)

    async def check(_: int) -> None:
        async with c.uow(key.tenant_id) as u:
            await u.jobs.extend_lease(job.id, 1, c.clock.now())

    ms = await median_ms(n, check)
    await c.close()
    shutil.rmtree(home, ignore_errors=True)
    return {"claim_check_tx_ms_median": ms}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--s3", help="S3 endpoint (moto, MinIO); skipped when absent")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {"n": args.n, "load_average": os.getloadavg()}
    report["receipt_key"] = await receipt_key(args.n)
    report["worker"] = await claim_check(args.n)
    if args.s3:
        report["s3"] = await s3_deletes(args.s3, args.n)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
