"""LGPD canary over the production stack: a document whose text and file name hold a canary
string and a canary CPF goes through `contrackt api` + `contrackt worker` over PostgreSQL, S3,
Redis Streams and Redis results; afterwards the canary is in no log, no database dump, no Redis
key, no bucket object and no file left in the temporary directories."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.contract.services import service
from tests.integration.test_production_flow import Deployment, deployment  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

CANARY = f"CANARIO{uuid.uuid4().hex[:12].upper()}"
CANARY_CPF = "529.982.247-25"


def canary_pdf(text: str) -> bytes:
    """A one-page PDF with a real text layer (Helvetica), built by hand."""
    content = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def needles() -> list[bytes]:
    return [CANARY.encode(), CANARY_CPF.encode(), CANARY.encode("utf-16-le")]


def found_in(data: bytes) -> list[bytes]:
    return [n for n in needles() if n in data]


async def redis_dump(url: str) -> bytes:
    r = Redis.from_url(url)
    chunks = []
    try:
        async for key in r.scan_iter(count=500):
            kind = (await r.type(key)).decode()
            chunks.append(key)
            if kind == "string":
                chunks.append(await r.get(key) or b"")
            elif kind == "stream":
                for _, fields in await r.xrange(key):
                    chunks.extend(k + v for k, v in fields.items())
            elif kind == "zset":
                chunks.extend(m for m, _ in await r.zrange(key, 0, -1, withscores=True))
            elif kind == "hash":
                chunks.extend(k + v for k, v in (await r.hgetall(key)).items())
            elif kind == "list":
                chunks.extend(await r.lrange(key, 0, -1))
            elif kind == "set":
                chunks.extend(await r.smembers(key))
    finally:
        await r.aclose()
    return b"\n".join(chunks)


async def test_canary_leaves_no_trace_in_production_stack(deployment: Deployment) -> None:  # noqa: F811
    d = deployment
    started = time.time()
    tenant = d.tenant("Canario Ltda")
    await d.start_api()
    await d.start_worker("worker-1")
    pdf = canary_pdf(f"Contrato {CANARY} CPF {CANARY_CPF}")
    headers = {"X-API-Key": tenant["api_key"]}
    async with httpx.AsyncClient(base_url=d.base, timeout=30) as http:
        r = await http.post("/v1/extract", headers=headers, files={"file": (f"{CANARY}.pdf", pdf, "application/pdf")})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        for _ in range(240):
            status = (await http.get(f"/v1/jobs/{job_id}", headers=headers)).json()
            if status["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.25)
        assert status["status"] == "completed", status
        result = (await http.get(f"/v1/jobs/{job_id}/result", headers=headers)).json()
        # the canary really went through the pipeline
        assert CANARY in result["text"] and CANARY_CPF in result["text"]
        await http.delete(f"/v1/jobs/{job_id}", headers=headers)
    d.close()  # flush and stop every process before reading their logs

    places: dict[str, list[bytes]] = {}
    for proc in d.procs:
        places[f"log:{proc.name}"] = found_in(proc.log.read_bytes())
    dump = subprocess.run(
        ["pg_dump", "--data-only", d.pg.dsn(d.pg.admin_target_url)], capture_output=True, timeout=120, check=True
    ).stdout
    assert b"audit_logs" in dump  # the dump really covers the service's tables
    places["postgres"] = found_in(dump)
    places["redis"] = found_in(await redis_dump(service("REDIS")))
    import aioboto3

    async with aioboto3.Session().client("s3", endpoint_url=service("S3")) as s3:
        listing = await s3.list_objects_v2(Bucket=d.bucket)
        for obj in listing.get("Contents", []):
            body = await (await s3.get_object(Bucket=d.bucket, Key=obj["Key"]))["Body"].read()
            places[f"s3:{obj['Key']}"] = found_in(body + obj["Key"].encode())
    for root in {Path(tempfile.gettempdir()), d.tmp / "home"}:
        for path in root.rglob("*"):
            try:
                if path.is_file() and path.stat().st_mtime >= started and path.stat().st_size < 50_000_000:
                    if d.tmp in path.parents and path.suffix == ".log":
                        continue  # the process logs were checked above
                    places[f"file:{path}"] = found_in(path.read_bytes())
            except OSError:
                continue
    leaks = {where: hits for where, hits in places.items() if hits}
    assert leaks == {}, f"canary found in: {sorted(leaks)}"
    assert len(places) >= 4


def test_canary_pdf_is_a_real_pdf() -> None:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(canary_pdf("hello"))
    try:
        assert doc[0].get_textpage().get_text_range().strip() == "hello"
    finally:
        doc.close()
