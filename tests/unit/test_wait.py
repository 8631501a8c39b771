"""POST /v1/extract?wait=N through the ASGI app (embedded backends, fake extractor)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.api.edge import Edge
from contrackt.bootstrap import Container, build
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf


class Api:
    def __init__(self, app: object, c: Container, http: httpx.AsyncClient) -> None:
        self.app, self.c, self.http = app, c, http

    @property
    def edge(self) -> Edge:
        e: Edge = self.app.state.edge  # type: ignore[attr-defined]
        return e


@asynccontextmanager
async def running(tmp_path: Path, **overrides: object) -> AsyncIterator[Api]:
    settings = embedded_settings(tmp_path / "home", **overrides)
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    fake = FakeExtractor()
    app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, fake))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=90) as http:
                yield Api(app, c, http)
    finally:
        await c.close()


async def key(c: Container, name: str = "acme") -> tuple[dict[str, str], str]:
    new = await c.tenants.create(name)
    return {"X-API-Key": new.api_key}, new.key_id


async def test_wait_returns_the_result_exactly_as_get_result_gives_it(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        h, _ = await key(api.c)
        doc = fake_pdf("Contrato de locação\nCláusula primeira%PAGESegunda página")
        r = await api.http.post("/v1/extract?wait=30", headers=h, content=doc)
        assert r.status_code == 200, r.text
        job_id = r.headers["x-job-id"]
        assert r.headers["location"] == f"/v1/jobs/{job_id}"
        assert r.headers["x-wait-outcome"] == "completed"
        assert len(r.headers["x-document-sha256"]) == 64
        assert r.headers["content-type"] == "application/json"
        assert int(r.headers["content-length"]) == len(r.content)
        again = await api.http.get(f"/v1/jobs/{job_id}/result", headers=h)
        assert again.content == r.content
        body = r.json()
        assert body["job_id"] == job_id
        assert [p["text"] for p in body["pages"]] == ["Contrato de locação\nCláusula primeira", "Segunda página"]

        text = await api.http.post("/v1/extract", params={"wait": 30, "format": "text"}, headers=h, content=doc)
        assert text.status_code == 200
        assert text.headers["content-type"].startswith("text/plain")
        assert text.text == "Contrato de locação\nCláusula primeira\n\f\nSegunda página"
        assert text.headers["x-job-id"] != job_id  # no idempotency key: a second job
        # The waits gave their stream slots and subscriptions back.
        assert api.edge.admission.streams.in_use() == 0
        assert api.edge.watcher._subs == set()


async def test_wait_follows_delete_on_read(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        h, _ = await key(api.c)
        r = await api.http.post("/v1/extract?wait=30&delete_on_read=true", headers=h, content=fake_pdf("Recibo"))
        assert r.status_code == 200
        assert r.json()["pages"][0]["text"] == "Recibo"
        job_id = r.headers["x-job-id"]
        for _ in range(50):  # destroyed once the last byte was handed over
            gone = await api.http.get(f"/v1/jobs/{job_id}/result", headers=h)
            if gone.status_code == 410:
                break
            await asyncio.sleep(0.05)
        assert gone.status_code == 410 and gone.json()["code"] == "gone"


async def test_a_job_slower_than_the_wait_gets_the_usual_202(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        h, _ = await key(api.c)
        started = time.monotonic()
        r = await api.http.post("/v1/extract?wait=1", headers=h, content=fake_pdf("a%PAGEb%PAGEc", "slow"))
        took = time.monotonic() - started
        assert r.status_code == 202, r.text
        assert 0.9 <= took < 2.5
        body = r.json()
        assert body["status"] in ("pending", "processing")
        assert body["job_id"] == r.headers["x-job-id"]
        assert r.headers["x-wait-outcome"] == "timeout"
        assert api.edge.admission.streams.in_use() == 0


async def test_a_job_that_fails_within_the_wait_is_202_with_its_error(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        h, _ = await key(api.c)
        r = await api.http.post("/v1/extract?wait=30", headers=h, content=fake_pdf("x", "corrupt"))
        assert r.status_code == 202
        assert r.headers["x-wait-outcome"] == "failed"
        body = r.json()
        assert body["status"] == "failed"
        assert body["error"]["code"] == "corrupt_pdf"


@pytest.mark.parametrize("value", ["61", "-1", "1.5", "soon"])
async def test_wait_beyond_the_bounds_is_422(tmp_path: Path, value: str) -> None:
    async with running(tmp_path) as api:
        h, _ = await key(api.c)
        r = await api.http.post(f"/v1/extract?wait={value}", headers=h, content=fake_pdf("x"))
        assert r.status_code == 422
        assert r.json()["code"] == "invalid_request"
        assert (await api.http.get("/v1/jobs", headers=h)).json()["jobs"] == []  # nothing was accepted


async def test_wait_counts_against_the_keys_stream_cap_and_never_refuses_accepted_work(tmp_path: Path) -> None:
    async with running(tmp_path, max_streams_per_key=1) as api:
        h, key_id = await key(api.c)
        held = api.edge.admission.stream(key_id)  # the key's only stream slot is in use
        try:
            started = time.monotonic()
            r = await api.http.post("/v1/extract?wait=30", headers=h, content=fake_pdf("a%PAGEb", "slow"))
            assert time.monotonic() - started < 1.0  # did not wait
            assert r.status_code == 202
            assert r.headers["x-wait-outcome"] == "too_many_streams"
            assert r.json()["status"] == "pending"
        finally:
            held.release()
        # Another key of another tenant is not affected.
        other, _ = await key(api.c, "other")
        assert (await api.http.post("/v1/extract?wait=30", headers=other, content=fake_pdf("y"))).status_code == 200


async def test_replay_with_wait_of_a_finished_job_answers_its_result(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        h, _ = await key(api.c)
        idem = {**h, "Idempotency-Key": "order-77"}
        first = await api.http.post("/v1/extract?wait=30", headers=idem, content=fake_pdf("Pedido 77"))
        second = await api.http.post("/v1/extract?wait=30", headers=idem, content=fake_pdf("Pedido 77"))
        assert first.status_code == second.status_code == 200
        assert first.headers["x-job-id"] == second.headers["x-job-id"]
        assert first.content == second.content


async def test_a_key_revoked_during_the_wait_gets_no_result(tmp_path: Path) -> None:
    async with running(tmp_path) as api:
        new = await api.c.tenants.create("acme")
        h = {"X-API-Key": new.api_key}
        doc = fake_pdf("a%PAGEb%PAGEc%PAGEd%PAGEe%PAGEf", "slow")
        post = asyncio.create_task(api.http.post("/v1/extract?wait=30", headers=h, content=doc))
        await asyncio.sleep(0.5)
        assert await api.c.tenants.revoke_key(new.key_id)
        r = await asyncio.wait_for(post, 10)
        assert r.status_code == 202
        assert r.headers["x-wait-outcome"] == "unauthorized"


def test_a_client_that_leaves_during_the_wait_frees_its_slot(tmp_path: Path) -> None:
    from tests.live_server import live_server

    with live_server(tmp_path) as live:
        h = {"X-API-Key": live.new_key()}
        doc = fake_pdf("a%PAGEb%PAGEc%PAGEd%PAGEe%PAGEf", "slow")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{live.url}/v1/extract?wait=60", headers=h, content=doc, timeout=1.0)
        edge: Edge = live.app.state.edge
        deadline = time.monotonic() + 5
        while edge.admission.streams.in_use() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert edge.admission.streams.in_use() == 0  # within about a second, not after 60
        assert edge.watcher._subs == set()
        jobs = httpx.get(f"{live.url}/v1/jobs", headers=h).json()["jobs"]
        assert len(jobs) == 1  # the job stands; the client finds it by listing (or its Idempotency-Key)
