"""A streamed result over real HTTP (uvicorn on 127.0.0.1, results in the real Redis): a segment that
fails its check mid-stream reaches the client as a broken transfer, never as a short complete body;
delete_on_read waits for the last byte."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.services.crypto import SEGMENT_SIZE, STREAM_HEADER_SIZE, TAG_SIZE
from contrackt.services.result_object import HEADER_SIZE
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.contract.services import service
from tests.fakes import FakeExtractor, fake_pdf

pytestmark = pytest.mark.integration

LINE = "Cláusula 9ª: a rescisão antecipada implica multa de 20% sobre o saldo.\n"


@dataclass
class Server:
    url: str
    container: Container
    api_key: str
    tenant_id: str


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    from contrackt.adapters.db.migrate import upgrade

    settings = embedded_settings(tmp_path / "home", results_url=service("REDIS"))
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    app = create_app(container=c, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, FakeExtractor()))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(srv.serve())
    try:
        async with asyncio.timeout(20):
            while not srv.started:
                await asyncio.sleep(0.02)
        port = srv.servers[0].sockets[0].getsockname()[1]
        key = await c.tenants.create("acme")
        yield Server(f"http://127.0.0.1:{port}", c, key.api_key, key.tenant_id)
    finally:
        srv.should_exit = True
        await task
        await c.close()


async def _completed(http: httpx.AsyncClient, s: Server, text: str) -> str:
    r = await http.post("/v1/extract?delete_on_read=true", content=fake_pdf(text))
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    async with asyncio.timeout(20):
        while (await http.get(f"/v1/jobs/{job_id}")).json()["status"] != "completed":
            await asyncio.sleep(0.05)
    return job_id


async def _flip(s: Server, job_id: str, position: int) -> None:
    stored = await s.container.results.get(s.tenant_id, job_id)
    assert stored is not None
    changed = bytearray(stored)
    changed[position] ^= 0x01
    async with s.container.uow(s.tenant_id) as uow:
        job = await uow.jobs.get(s.tenant_id, job_id)
    assert job is not None and job.result_expires_at is not None
    await s.container.results.put(s.tenant_id, job_id, bytes(changed), job.result_expires_at)


async def _gone_soon(s: Server, job_id: str) -> None:
    """delete_on_read destroys the result once its last byte has been handed to the server;
    the client may hold the whole body a moment before that."""
    async with asyncio.timeout(5):
        while await s.container.results.get(s.tenant_id, job_id) is not None:
            await asyncio.sleep(0.02)


async def test_tampered_segment_mid_stream_is_a_broken_transfer(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}) as http:
        job_id = await _completed(http, server, LINE * 6000)  # ~440 KB of text: 7 JSON segments and more
        bad_segment = 3
        position = HEADER_SIZE + STREAM_HEADER_SIZE + bad_segment * (SEGMENT_SIZE + TAG_SIZE) + 9
        await _flip(server, job_id, position)
        received = bytearray()
        async with http.stream("GET", f"/v1/jobs/{job_id}/result") as r:
            assert r.status_code == 200
            declared = int(r.headers["content-length"])
            with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
                async for chunk in r.aiter_raw():
                    received += chunk
        assert len(received) == bad_segment * SEGMENT_SIZE < declared
        with pytest.raises(json.JSONDecodeError):
            json.loads(received)
        # the aborted read did not count: the result is still there, whole once repaired
        await _flip(server, job_id, position)
        whole = await http.get(f"/v1/jobs/{job_id}/result")
        assert whole.status_code == 200 and len(whole.content) == declared
        assert whole.json()["text"].count("rescisão") == 6000
        # delete_on_read: gone after the full read, in Redis too
        await _gone_soon(server, job_id)
        assert (await http.get(f"/v1/jobs/{job_id}/result")).status_code == 410


async def test_client_that_leaves_mid_stream_keeps_the_result(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}) as http:
        job_id = await _completed(http, server, LINE * 60000)  # ~4.4 MB of text, several reads
        async with http.stream("GET", f"/v1/jobs/{job_id}/result?format=text") as r:
            assert r.status_code == 200
            declared = int(r.headers["content-length"])
            got = 0
            async for chunk in r.aiter_raw():
                got += len(chunk)
                if got >= SEGMENT_SIZE:
                    break  # the client closes the connection here
        assert got < declared
        await asyncio.sleep(0.5)  # let the server notice
        assert await server.container.results.get(server.tenant_id, job_id) is not None
        text = await http.get(f"/v1/jobs/{job_id}/result?format=text")
        assert text.status_code == 200 and len(text.content) == declared
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        await _gone_soon(server, job_id)
