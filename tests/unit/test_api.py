"""The HTTP API through httpx's ASGI transport, embedded backends, fake extractor."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from contrackt.bootstrap import Container
from tests.fakes import fake_pdf


async def new_tenant(container: Container, name: str = "acme") -> dict[str, str]:
    key = await container.tenants.create(name)
    return {"X-API-Key": key.api_key, "tenant_id": key.tenant_id}


def headers(t: dict[str, str]) -> dict[str, str]:
    return {"X-API-Key": t["X-API-Key"]}


async def wait_done(client: httpx.AsyncClient, job_id: str, h: dict[str, str], timeout: float = 20) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        r = await client.get(f"/v1/jobs/{job_id}", headers=h)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


async def test_upload_multipart_then_poll_and_read_result(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    pdf = fake_pdf("Contrato de prestação de serviços\nCPF 411.842.785-04%PAGESegunda página")
    r = await client.post("/v1/extract", headers=headers(t), files={"file": ("contrato.pdf", pdf, "application/pdf")})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending"
    assert len(body["document_sha256"]) == 64
    assert r.headers["location"] == f"/v1/jobs/{body['job_id']}"
    assert body["links"] == {
        "self": f"/v1/jobs/{body['job_id']}",
        "result": f"/v1/jobs/{body['job_id']}/result",
        "events": f"/v1/jobs/{body['job_id']}/events",
    }
    status = await wait_done(client, body["job_id"], headers(t))
    assert status["status"] == "completed"
    assert (status["pages_done"], status["pages_total"]) == (2, 2)
    assert status["error"] is None and status["completed_at"]

    result = (await client.get(f"/v1/jobs/{body['job_id']}/result", headers=headers(t))).json()
    assert [p["number"] for p in result["pages"]] == [1, 2]
    assert result["pages"][0]["text"].startswith("Contrato de prestação")
    assert result["pages"][0]["source"] == "text_layer"
    assert result["pages"][0]["lines"][0]["bbox"] == [10.0, 10.0, 200.0, 20.0]
    assert "Segunda página" in result["text"]
    assert len(result["result_sha256"]) == 64
    assert set(result) == {"job_id", "text", "pages", "confidence_avg", "result_sha256", "active_content"}
    assert result["active_content"] == []
    text = await client.get(f"/v1/jobs/{body['job_id']}/result?format=text", headers=headers(t))
    assert text.headers["content-type"].startswith("text/plain")
    assert "CPF 411.842.785-04" in text.text


async def test_raw_pdf_body_is_accepted(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    r = await client.post(
        "/v1/extract", headers={**headers(t), "Content-Type": "application/pdf"}, content=fake_pdf("Recibo")
    )
    assert r.status_code == 202
    assert (await wait_done(client, r.json()["job_id"], headers(t)))["status"] == "completed"


async def test_document_is_destroyed_after_processing(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    r = await client.post("/v1/extract", headers=headers(t), content=fake_pdf("Nota fiscal"))
    await wait_done(client, r.json()["job_id"], headers(t))
    await asyncio.sleep(0.1)
    assert await container.blobs.list() == []


async def test_other_tenant_gets_404_everywhere(client: httpx.AsyncClient, container: Container) -> None:
    a = await new_tenant(container, "a")
    b = await new_tenant(container, "b")
    job_id = (await client.post("/v1/extract", headers=headers(a), content=fake_pdf("segredo"))).json()["job_id"]
    await wait_done(client, job_id, headers(a))
    missing = "00000000-0000-4000-8000-000000000000"
    for path in ("", "/result", "/events"):
        theirs = await client.get(f"/v1/jobs/{job_id}{path}", headers=headers(b))
        nobody = await client.get(f"/v1/jobs/{missing}{path}", headers=headers(b))
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json()["code"] == nobody.json()["code"] == "not_found"
        assert theirs.json()["detail"] == nobody.json()["detail"]
    assert (await client.delete(f"/v1/jobs/{job_id}", headers=headers(b))).status_code == 404
    # and the owner still has it
    assert (await client.get(f"/v1/jobs/{job_id}/result", headers=headers(a))).status_code == 200


async def test_missing_and_wrong_keys_get_the_same_401(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    wrong_secret = t["X-API-Key"][:-4] + "AAAA"
    answers = [
        await client.post("/v1/extract", content=fake_pdf("x")),
        await client.post("/v1/extract", headers={"X-API-Key": "nonsense"}, content=fake_pdf("x")),
        await client.post("/v1/extract", headers={"X-API-Key": wrong_secret}, content=fake_pdf("x")),
    ]
    assert {r.status_code for r in answers} == {401}
    assert len({r.content for r in answers}) == 1
    assert answers[0].headers["content-type"] == "application/problem+json"


async def test_revoked_key_fails_at_once(client: httpx.AsyncClient, container: Container) -> None:
    key = await container.tenants.create("acme")
    h = {"X-API-Key": key.api_key}
    assert (await client.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=h)).status_code == 404
    assert await container.tenants.revoke_key(key.key_id)
    assert (await client.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=h)).status_code == 401


async def test_key_in_query_string_is_refused(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    r = await client.get(f"/v1/jobs/x?api_key={t['X-API-Key']}")
    assert r.status_code == 422
    assert "header" in r.json()["detail"]


async def test_bad_input_gets_problem_json(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    h = headers(t)
    not_pdf = await client.post("/v1/extract", headers=h, files={"file": ("a.pdf", b"<html>oops</html>", "text/html")})
    assert (not_pdf.status_code, not_pdf.json()["code"]) == (415, "not_a_pdf")
    polyglot = await client.post("/v1/extract", headers=h, content=b"GIF89a....%PDF-1.4 ...")
    assert (polyglot.status_code, polyglot.json()["code"]) == (415, "not_a_pdf")
    empty = await client.post("/v1/extract", headers=h, content=b"")
    assert (empty.status_code, empty.json()["code"]) == (422, "empty_upload")
    empty_part = await client.post("/v1/extract", headers=h, files={"file": ("a.pdf", b"", "application/pdf")})
    assert empty_part.status_code == 422
    no_field = await client.post("/v1/extract", headers=h, files={"other": ("a.pdf", b"%PDF-1.4", "application/pdf")})
    assert no_field.status_code == 422
    bad_mode = await client.post("/v1/extract?mode=fast", headers=h, content=fake_pdf("x"))
    assert bad_mode.status_code == 422
    bad_engine = await client.post("/v1/extract?engine=nope", headers=h, content=fake_pdf("x"))
    assert (bad_engine.status_code, bad_engine.json()["code"]) == (422, "unknown_engine")
    for r in (not_pdf, polyglot, empty, bad_mode, bad_engine):
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"]


async def test_oversized_upload_is_refused_while_streaming(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    container.settings.max_upload_mb = 1
    sent = 0

    async def body() -> Any:
        nonlocal sent
        yield b"%PDF-1.7\n"
        for _ in range(64):  # 64 MiB offered, no Content-Length
            sent += 1
            yield b"0" * (1024 * 1024)

    r = await client.post("/v1/extract", headers={**headers(t), "Content-Type": "application/pdf"}, content=body())
    assert (r.status_code, r.json()["code"]) == (413, "upload_too_large")
    assert sent < 64  # stopped reading long before the end
    declared = await client.post(
        "/v1/extract",
        headers={**headers(t), "Content-Type": "application/pdf", "Content-Length": str(200 * 1024 * 1024)},
        content=b"%PDF-1.7",
    )
    assert declared.status_code == 413


async def test_failures_are_reported_with_codes(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    h = headers(t)
    enc = (await client.post("/v1/extract", headers=h, content=fake_pdf("x", "encrypted"))).json()["job_id"]
    status = await wait_done(client, enc, h)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "encrypted_pdf"
    r = await client.get(f"/v1/jobs/{enc}/result", headers=h)
    assert r.status_code == 409
    assert await container.blobs.list() == []


async def test_crashing_child_is_retried_then_fails(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    h = headers(t)
    job = (await client.post("/v1/extract", headers=h, content=fake_pdf("x", "crash"))).json()["job_id"]
    status = await wait_done(client, job, h, timeout=30)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "resource_limit"
    async with container.uow(t["tenant_id"]) as uow:
        chain = await uow.audit.chain(t["tenant_id"])
    actions = [row.event.action.value for row in chain if row.event.job_id == job]
    assert actions.count("PROCESSING") == 3
    assert actions.count("FAILED") == 1 and "COMPLETED" not in actions


async def test_result_not_ready_is_409(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    h = headers(t)
    job = (await client.post("/v1/extract", headers=h, content=fake_pdf("a%PAGEb%PAGEc", "slow"))).json()["job_id"]
    r = await client.get(f"/v1/jobs/{job}/result", headers=h)
    assert (r.status_code, r.json()["code"]) == (409, "not_finished")


async def test_delete_purges_and_result_is_410(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    h = headers(t)
    job = (await client.post("/v1/extract", headers=h, content=fake_pdf("x"))).json()["job_id"]
    await wait_done(client, job, h)
    assert (await client.delete(f"/v1/jobs/{job}", headers=h)).status_code == 200
    r = await client.get(f"/v1/jobs/{job}/result", headers=h)
    assert (r.status_code, r.json()["code"]) == (410, "gone")


async def test_idempotency_key_returns_the_same_job(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    h = {**headers(t), "Idempotency-Key": "pedido-42"}
    first = (await client.post("/v1/extract", headers=h, content=fake_pdf("x"))).json()
    second = (await client.post("/v1/extract", headers=h, content=fake_pdf("x"))).json()
    assert first["job_id"] == second["job_id"]


async def test_sse_stream_reports_progress_and_completion(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    h = headers(t)
    job = (await client.post("/v1/extract", headers=h, content=fake_pdf("a%PAGEb"))).json()["job_id"]
    async with client.stream("GET", f"/v1/jobs/{job}/events", headers=h) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("event: ") async for line in r.aiter_lines() if line.startswith("event: ")]
    assert events[0] == "queued"
    assert events[-1] == "completed"


async def test_rate_limit_answers_429_with_headers(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    container.settings.rate_limit_status = "3/minute"
    h = headers(t)
    codes = [(await client.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=h)) for _ in range(4)]
    assert [r.status_code for r in codes] == [404, 404, 404, 429]
    assert int(codes[-1].headers["retry-after"]) >= 1
    assert codes[-1].headers["ratelimit-limit"] == "3"
    assert codes[-1].json()["code"] == "rate_limited"


async def test_health_and_metrics(client: httpx.AsyncClient, container: Container) -> None:
    t = await new_tenant(container)
    job = (await client.post("/v1/extract", headers=headers(t), content=fake_pdf("a%PAGEb"))).json()["job_id"]
    await wait_done(client, job, headers(t))
    assert (await client.get("/v1/health/live")).json()["status"] == "ok"
    ready = await client.get("/v1/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok"
    assert (await client.get("/v1/health")).status_code == 200
    metrics = await client.get("/metrics")
    assert "contrackt_jobs_submitted_total" in metrics.text
    assert "contrackt_queue_depth 0.0" in metrics.text
    assert 'contrackt_jobs_finished_total{outcome="completed"}' in metrics.text
    assert 'contrackt_pages_total{source="text_layer"}' in metrics.text
    assert "contrackt_job_seconds_bucket" in metrics.text
