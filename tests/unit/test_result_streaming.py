"""GET /v1/jobs/{id}/result is streamed: today's shape and headers, errors before the first byte,
a broken transfer (never a short well-formed body) on tampering, legacy results still served,
delete_on_read only after the last byte, and the API's memory bounded by a segment, not the result."""

from __future__ import annotations

import gc
import hashlib
import json
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import sqlalchemy as sa
import structlog
from bench.results_stream import PreparedExtractor, big_result, seal_legacy, serve
from fastapi import FastAPI

from contrackt.adapters.db import tables
from contrackt.api.app import create_app
from contrackt.bootstrap import Container
from contrackt.domain.audit import AuditAction
from contrackt.domain.errors import DecryptionFailed
from contrackt.services.crypto import PURPOSE_RESULT, SEGMENT_SIZE, STREAM_HEADER_SIZE, TAG_SIZE, open_stream
from contrackt.services.result_object import HEADER_SIZE, ResultHeader, open_result_part, result_key_version
from contrackt.worker.runtime import WorkerRuntime
from tests.fakes import FakeExtractor, fake_pdf
from tests.unit.lifecycle_support import auth, job_chain, new_tenant, wait_done, wait_purged

MB = 1_000_000


@pytest.fixture(autouse=True)
def plain_tracebacks() -> Iterator[None]:
    """Aborted streams log a traceback; structlog's unconfigured default renders it with every
    frame's locals (megabytes of ciphertext here), which takes seconds. Production logging
    (contrackt.logging.configure) formats tracebacks plainly, as this does."""
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.processors.format_exc_info, structlog.dev.ConsoleRenderer(colors=False)])
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture
async def app(container: Container) -> AsyncIterator[FastAPI]:
    application = create_app(
        container=container, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor())
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def _done(http: httpx.AsyncClient, c: Container, t: dict[str, str], text: str, query: str = "") -> str:
    r = await http.post(f"/v1/extract{query}", headers=auth(t), content=fake_pdf(text))
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    assert (await wait_done(http, job_id, auth(t)))["status"] == "completed"
    await wait_purged(c, t["tenant_id"], job_id)
    return job_id


def _long_text(kib: int) -> str:
    """Several segments' worth of lines, with accents (multi-byte UTF-8 across segment edges)."""
    line = "Cláusula 7ª: o CONTRATANTE pagará à CONTRATADA R$ 1.234,56 até o 5º dia útil.\n"
    return line * (kib * 1024 // len(line.encode()) + 1)


async def _tamper(c: Container, tenant_id: str, job_id: str, position: int) -> None:
    stored = await c.results.get(tenant_id, job_id)
    assert stored is not None
    async with c.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
    assert job is not None and job.result_expires_at is not None
    changed = bytearray(stored)
    changed[position] ^= 0x01
    await c.results.put(tenant_id, job_id, bytes(changed), job.result_expires_at)


async def test_json_and_text_keep_todays_shape_and_headers(http: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    text = _long_text(200)  # four JSON segments and more
    job_id = await _done(http, container, t, f"Primeira página%PAGE{text}")

    r = await http.get(f"/v1/jobs/{job_id}/result", headers=auth(t))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content) > 3 * SEGMENT_SIZE
    body = r.json()
    assert set(body) == {"job_id", "text", "pages", "confidence_avg", "result_sha256", "active_content"}
    assert body["job_id"] == job_id and [p["number"] for p in body["pages"]] == [1, 2]
    assert body["pages"][1]["text"] == text.strip()
    # byte for byte what the JSONResponse of before rendered
    assert r.content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    # the client can recompute result_sha256 from what it received, and it is the audited one
    canonical = {k: v for k, v in body.items() if k != "result_sha256"}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert body["result_sha256"] == digest
    rows = {row.event.action: row.event.details for row in await job_chain(container, t["tenant_id"], job_id)}
    assert rows[AuditAction.COMPLETED]["result_sha256"] == digest == rows[AuditAction.DELIVERED]["result_sha256"]
    assert rows[AuditAction.COMPLETED]["engine"] == "fake"  # recorded there, not in the result

    plain = await http.get(f"/v1/jobs/{job_id}/result?format=text", headers=auth(t))
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "text/plain; charset=utf-8"
    assert int(plain.headers["content-length"]) == len(plain.content)
    assert plain.text == body["text"]


async def test_stored_result_has_no_engine_and_is_segmented(http: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    job_id = await _done(http, container, t, _long_text(100))
    stored = await container.results.get(t["tenant_id"], job_id)
    assert stored is not None
    key = await container.keyring.data_key(t["tenant_id"], result_key_version(stored))
    stored_json = json.loads(open_result_part(key, t["tenant_id"], job_id, stored, "json"))
    assert "engine" not in stored_json
    assert open_result_part(key, t["tenant_id"], job_id, stored, "text").decode() == stored_json["text"]
    header = ResultHeader.parse(stored)
    assert header.result_sha256 == stored_json["result_sha256"]
    # every part back to back after the header; a job without a searchable PDF has no pdf part
    assert len(stored) == HEADER_SIZE + sum(header.lengths.values())
    assert header.has("markdown") and not header.has("pdf")
    assert open_result_part(key, t["tenant_id"], job_id, stored, "markdown").decode().startswith("<!-- page 1 -->")
    # the text stream does not open as the JSON, nor the object under another job's identity
    offset, length = header.span("text")
    text_stream = stored[offset : offset + length]
    with pytest.raises(DecryptionFailed):
        open_stream(key, t["tenant_id"], job_id, PURPOSE_RESULT, text_stream, context=header.raw)
    with pytest.raises(DecryptionFailed):
        open_result_part(key, t["tenant_id"], str(uuid.uuid4()), stored, "json")
    # one object per job, so both parts go with one delete (DELETE, delete_on_read, expiry, erase)
    async with container.uow(t["tenant_id"]) as uow:
        count = sa.select(sa.func.count()).select_from(tables.results).where(tables.results.c.job_id == job_id)
        assert (await uow.conn.execute(count)).scalar_one() == 1
    assert (await http.delete(f"/v1/jobs/{job_id}", headers=auth(t))).status_code == 200
    async with container.uow(t["tenant_id"]) as uow:
        assert (await uow.conn.execute(count)).scalar_one() == 0
    for fmt in ("json", "text"):
        assert (await http.get(f"/v1/jobs/{job_id}/result?format={fmt}", headers=auth(t))).status_code == 410


async def test_legacy_single_piece_result_is_still_served(http: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    job_id = await _done(http, container, t, "Contrato antigo%PAGEsegunda", "?delete_on_read=true")
    stored = await container.results.get(t["tenant_id"], job_id)
    assert stored is not None
    expected = json.loads(await _read_json_part(container, t["tenant_id"], job_id, stored))
    # rewrite it as the worker wrote results before they were streamed (with "engine", one piece)
    from contrackt.domain.results import ExtractionResult

    result = ExtractionResult.from_dict({**expected, "engine": "rapidocr"})
    version, key = await container.keyring.current(t["tenant_id"])
    legacy = seal_legacy(key, version, t["tenant_id"], job_id, result)
    assert legacy[:3] == b"CK1"
    await _put_again(container, t["tenant_id"], job_id, legacy)

    text = await http.get(f"/v1/jobs/{job_id}/result?format=text", headers=auth(t))
    assert (text.status_code, text.text) == (200, "Contrato antigo\n\f\nsegunda")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    # delete_on_read applies to the legacy path too
    assert (await http.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).status_code == 410

    job2 = await _done(http, container, t, "outro")
    stored2 = await container.results.get(t["tenant_id"], job2)
    assert stored2 is not None
    expected2 = json.loads(await _read_json_part(container, t["tenant_id"], job2, stored2))
    legacy2 = seal_legacy(key, version, t["tenant_id"], job2, ExtractionResult.from_dict({**expected2, "engine": "x"}))
    await _put_again(container, t["tenant_id"], job2, legacy2)
    r = await http.get(f"/v1/jobs/{job2}/result", headers=auth(t))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert "engine" not in body
    assert {k: v for k, v in body.items() if k != "result_sha256"} == {
        k: v for k, v in expected2.items() if k != "result_sha256"
    }
    assert int(r.headers["content-length"]) == len(r.content)


async def _read_json_part(c: Container, tenant_id: str, job_id: str, stored: bytes) -> bytes:
    key = await c.keyring.data_key(tenant_id, result_key_version(stored))
    return open_result_part(key, tenant_id, job_id, stored, "json")


async def _put_again(c: Container, tenant_id: str, job_id: str, blob: bytes) -> None:
    async with c.uow(tenant_id) as uow:
        job = await uow.jobs.get(tenant_id, job_id)
    assert job is not None and job.result_expires_at is not None
    await c.results.put(tenant_id, job_id, blob, job.result_expires_at)


async def test_tampered_first_segment_fails_before_any_byte(http: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    job_id = await _done(http, container, t, "Contrato", "?delete_on_read=true")
    stored = await container.results.get(t["tenant_id"], job_id)
    assert stored is not None
    header = ResultHeader.parse(stored)
    for position, fmt in (
        (HEADER_SIZE + STREAM_HEADER_SIZE + 3, "json"),  # JSON segment 0
        (20, "json"),  # the object header (the digest): every segment of both parts authenticates it
        (20, "text"),
        (12, "text"),  # the object header (the text stream's length)
        (HEADER_SIZE + 20, "json"),  # the JSON stream's header (its salt)
        (HEADER_SIZE + header.json_length + STREAM_HEADER_SIZE + 1, "text"),  # text segment 0
    ):
        await _tamper(container, t["tenant_id"], job_id, position)
        r = await http.get(f"/v1/jobs/{job_id}/result?format={fmt}", headers=auth(t))
        assert r.headers["content-type"] == "application/problem+json"
        assert (r.status_code, r.json()["code"]) == (500, "decryption_failed")
        await _tamper(container, t["tenant_id"], job_id, position)  # flip it back
    # nothing was delivered or destroyed by the failed reads
    assert (await http.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).json()["text"] == "Contrato"
    delivered = [r for r in await job_chain(container, t["tenant_id"], job_id) if r.event.action == "DELIVERED"]
    assert len(delivered) == 1


async def test_tampering_mid_stream_breaks_the_transfer(
    app: FastAPI, http: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    job_id = await _done(http, container, t, _long_text(300), "?delete_on_read=true")
    stored = await container.results.get(t["tenant_id"], job_id)
    assert stored is not None
    header = ResultHeader.parse(stored)
    full = SEGMENT_SIZE + TAG_SIZE
    for part, start in (("json", HEADER_SIZE), ("text", HEADER_SIZE + header.json_length)):
        segments = -(-(header.span(part)[1] - STREAM_HEADER_SIZE) // full)
        assert segments >= 4
        for bad in (2, segments - 1):  # a middle segment, and the last one (the JSON's closing bytes)
            position = start + STREAM_HEADER_SIZE + bad * full + 5
            await _tamper(container, t["tenant_id"], job_id, position)
            served = await serve(app, f"/v1/jobs/{job_id}/result", t["X-API-Key"], f"format={part}", keep=True)
            await _tamper(container, t["tenant_id"], job_id, position)
            assert served.status == 200  # the headers were out before the bad segment was read
            # The app fails; Starlette's BaseHTTPMiddleware still ends the body it relays, so what
            # tells the client is the declared Content-Length: the server cuts the connection
            # short of it (tests/integration/test_result_stream_http.py shows it over real HTTP).
            assert served.error is not None
            assert served.body is not None
            # exactly the verified segments before the bad one, never a byte of it
            assert served.body_bytes == bad * SEGMENT_SIZE < int(served.headers["content-length"])
            if part == "json":
                with pytest.raises(json.JSONDecodeError):
                    json.loads(served.body)
    # through httpx's ASGI transport the app's failure reaches the client as an error, not a body
    await _tamper(container, t["tenant_id"], job_id, HEADER_SIZE + STREAM_HEADER_SIZE + 2 * full)
    with pytest.raises(RuntimeError, match="response already started") as raised:
        await http.get(f"/v1/jobs/{job_id}/result", headers=auth(t))
    assert isinstance(raised.value.__cause__, DecryptionFailed)
    await _tamper(container, t["tenant_id"], job_id, HEADER_SIZE + STREAM_HEADER_SIZE + 2 * full)
    # an aborted stream never counts as read: delete_on_read left the result in place
    assert await container.results.get(t["tenant_id"], job_id) is not None
    assert (await http.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).status_code == 200
    assert (await http.get(f"/v1/jobs/{job_id}/result", headers=auth(t))).status_code == 410


async def test_delete_on_read_happens_after_the_last_byte(
    app: FastAPI, http: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    job_id = await _done(http, container, t, _long_text(300), "?delete_on_read=true")
    path = f"/v1/jobs/{job_id}/result"
    # The client goes away after the first segment: the result stays for another try.
    gone = await serve(app, path, t["X-API-Key"], leave_after=1)
    assert gone.status == 200 and gone.error is not None
    assert 0 < gone.body_bytes < int(gone.headers["content-length"])
    assert await container.results.get(t["tenant_id"], job_id) is not None
    whole = await serve(app, path, t["X-API-Key"], keep=True)
    assert whole.complete and whole.error is None
    assert whole.body is not None and json.loads(whole.body)["job_id"] == job_id
    assert await container.results.get(t["tenant_id"], job_id) is None
    assert (await http.get(path, headers=auth(t))).status_code == 410
    actions = [r.event.action for r in await job_chain(container, t["tenant_id"], job_id)]
    # DELIVERED is written before the first byte of each transfer; PURGED(result) after the full one
    assert actions[-3:] == [AuditAction.DELIVERED, AuditAction.DELIVERED, AuditAction.PURGED]


async def test_result_that_vanishes_mid_stream_breaks_the_transfer(
    app: FastAPI, http: httpx.AsyncClient, container: Container
) -> None:
    t = await new_tenant(container)
    job_id = await _done(http, container, t, _long_text(3000))  # more than one 1 MiB read
    real_read = container.results.read
    calls = 0

    async def read_then_vanish(tenant_id: str, job: str, offset: int, length: int) -> bytes | None:
        nonlocal calls
        calls += 1
        if calls == 4:  # object header, stream header, first MiB: then a DELETE lands
            await container.results.delete(tenant_id, job)
        return await real_read(tenant_id, job, offset, length)

    container.results.read = read_then_vanish  # type: ignore[method-assign]
    try:
        served = await serve(app, f"/v1/jobs/{job_id}/result", t["X-API-Key"], "format=text")
    finally:
        container.results.read = real_read  # type: ignore[method-assign]
    assert served.status == 200 and served.error is not None
    assert 0 < served.body_bytes < int(served.headers["content-length"])


async def test_serving_a_60_mb_result_keeps_the_api_memory_bounded(container: Container) -> None:
    """tracemalloc over the request alone: the API's extra peak against the result's size."""
    big = big_result(60)
    application = create_app(
        container=container,
        run_worker=True,
        worker_factory=lambda c: WorkerRuntime(c, PreparedExtractor(big, big)),
    )
    async with application.router.lifespan_context(application):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http:
            t = await new_tenant(container)
            job_id = await _done(http, container, t, "big")
        compact = json.dumps({"job_id": job_id, **big.to_dict()}, ensure_ascii=False, separators=(",", ":"))
        expected_length = len(compact.encode()) + len(',"result_sha256":""') + 64
        del compact
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            served = await serve(application, f"/v1/jobs/{job_id}/result", t["X-API-Key"])
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert served.status == 200 and served.complete and served.error is None
    size = served.body_bytes
    print(f"\nresult JSON served: {size / MB:.1f} MB; API extra peak (tracemalloc): {peak / MB:.2f} MB")
    assert size == expected_length >= 60 * MB * 0.95
    assert peak < size * 0.05  # a few MiB: one ciphertext read and a segment, not the result
