"""The Python client (``contrackt.client``), blocking and asyncio, against the API served on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from contrackt.client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    ContracktClientError,
    IdempotencyConflictError,
    JobFailedError,
    NotFoundError,
    RateLimitedError,
    Result,
    ResultIntegrityError,
    ServiceUnavailableError,
    UnsupportedDocumentError,
    WaitTimeoutError,
)
from contrackt.domain.results import ExtractionResult, Word
from contrackt.ports.extractor import ExtractOptions, ProgressCallback
from tests.fakes import FakeExtractor, fake_pdf
from tests.live_server import Faulty, Live, live_server, problem

REPO = Path(__file__).resolve().parents[2]


class WordsExtractor(FakeExtractor):
    """Lines read "by OCR" on pages whose text starts with "scan:", with a box per word."""

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        result = await super().extract(pdf, options, progress)
        for page in result.pages:
            if page.text.startswith("scan:"):
                page.source = "ocr"
                for line in page.lines:
                    x0, y0, _, y1 = line.bbox
                    line.words = [
                        Word(w, 0.9, (x0 + 40 * i, y0, x0 + 40 * i + 30, y1)) for i, w in enumerate(line.text.split())
                    ]
        return result


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path, WordsExtractor()) as server:
        yield server


Call = Callable[..., Awaitable[Any]]


class Both:
    """One test, run through ``Client`` (in a thread) and through ``AsyncClient``: same calls, same answers."""

    def __init__(self, kind: str, url: str, key: str, **options: Any) -> None:
        self.kind = kind
        self.url, self.key, self.options = url, key, options

    async def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "async":
            async with AsyncClient(self.url, self.key, **self.options) as client:
                out = getattr(client, method)(*args, **kwargs)
                return await out

        def blocking() -> Any:
            with Client(self.url, self.key, **self.options) as client:
                return getattr(client, method)(*args, **kwargs)

        return await asyncio.to_thread(blocking)


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


@KINDS
async def test_extract_returns_a_typed_result_in_the_submissions_own_answer(live: Live, kind: str) -> None:
    wire = Faulty()
    doc = fake_pdf("Contrato de locação\nCláusula primeira%PAGEscan: Assinatura do locador")
    result: Result = await Both(kind, live.url, live.new_key(), transport=wire).run("extract", doc)
    assert result.document_sha256 == hashlib.sha256(doc).hexdigest()
    assert [p.number for p in result.pages] == [1, 2]
    assert result.pages[0].source == "text_layer"
    assert result.pages[0].lines[0].text == "Contrato de locação"
    assert result.pages[0].lines[0].bbox == (10.0, 10.0, 200.0, 20.0)
    assert result.pages[0].lines[0].words == []
    assert [w.text for w in result.pages[1].lines[0].words] == ["scan:", "Assinatura", "do", "locador"]
    assert result.pages[1].words == result.pages[1].lines[0].words == result.words
    assert result.words[1].bbox == (50.0, 10.0, 80.0, 20.0)
    assert result.text == "Contrato de locação\nCláusula primeira\n\f\nscan: Assinatura do locador"
    assert len(result.result_sha256 or "") == 64
    # One request: the answer to ?wait= carried the result.
    posts = [r for r, _ in wire.seen if r.method == "POST"]
    assert len(posts) == 1 and posts[0].url.params["wait"] == "30"
    assert [r.url.path for r, _ in wire.seen] == ["/v1/extract"]
    assert posts[0].headers["content-type"] == "application/pdf"
    assert posts[0].headers["idempotency-key"].startswith("ctk-sdk-")


@KINDS
async def test_extract_with_progress_follows_the_event_stream_page_by_page(live: Live, kind: str) -> None:
    wire = Faulty()
    seen: list[tuple[int, int]] = []
    doc = fake_pdf("um%PAGEdois%PAGEtrês", "slow")
    result = await Both(kind, live.url, live.new_key(), transport=wire).run(
        "extract", doc, format="text", progress=lambda done, total: seen.append((done, total))
    )
    assert result.text == "um\n\f\ndois\n\f\ntrês"
    assert result.format == "text" and result.pages == []
    assert seen == [(1, 3), (2, 3), (3, 3)]
    paths = [r.url.path for r, _ in wire.seen]
    job_id = result.job_id
    assert paths == ["/v1/extract", f"/v1/jobs/{job_id}/events", f"/v1/jobs/{job_id}/result"]
    assert "wait" not in wire.seen[0][0].url.params  # progress wanted: no holding in the submission


@KINDS
@pytest.mark.parametrize("stream", ["refused", "broken"])
async def test_without_an_event_stream_the_client_polls(live: Live, kind: str, stream: str) -> None:
    def rule(request: httpx.Request, n: int) -> httpx.Response | Exception | None:
        if request.url.path.endswith("/events"):
            if stream == "refused":
                return problem(429, "too_many_streams", retry_after="5")
            return httpx.RemoteProtocolError("peer closed connection (injected)")
        return None

    wire = Faulty(rule)
    seen: list[tuple[int, int]] = []
    doc = fake_pdf("a%PAGEb%PAGEc", "slow")
    client = Both(kind, live.url, live.new_key(), transport=wire, poll_interval=0.2)
    result = await client.run("extract", doc, progress=lambda d, t: seen.append((d, t)))
    assert [p.text for p in result.pages] == ["a", "b", "c"]
    assert seen[-1] == (3, 3) and seen == sorted(seen)
    polls = [r for r, _ in wire.seen if r.url.path == f"/v1/jobs/{result.job_id}"]
    assert len(polls) >= 3


@KINDS
async def test_429_and_503_are_retried_after_retry_after_with_one_idempotency_key_and_one_job(
    live: Live, kind: str
) -> None:
    def rule(request: httpx.Request, n: int) -> httpx.Response | str | None:
        if request.method != "POST":
            return None
        return [problem(503, "overloaded", "1"), problem(429, "rate_limited", "1"), "lose", None][n]

    wire = Faulty(rule)
    key = live.new_key()
    started = time.monotonic()
    result = await Both(kind, live.url, key, transport=wire).run("extract", fake_pdf("Nota fiscal 123"))
    took = time.monotonic() - started
    assert result.text == "Nota fiscal 123"
    assert took >= 2.0  # both Retry-After waits were honoured
    posts = [(r, status) for r, status in wire.seen if r.method == "POST"]
    assert [status for _, status in posts] == [503, 429, None, 200]
    assert len({r.headers["idempotency-key"] for r, _ in posts}) == 1
    # Two of the four reached the server (one answer was lost on the way): one job.
    async with AsyncClient(live.url, key) as client:
        assert len([j async for j in client.iter_jobs()]) == 1


def test_a_real_rate_limit_is_waited_out(tmp_path: Path) -> None:
    with live_server(tmp_path, rate_limit_extract="1/second") as live:
        wire = Faulty()
        started = time.monotonic()
        with Client(live.url, live.new_key(), transport=wire) as client:
            jobs = [client.submit(fake_pdf(f"doc {i}")) for i in range(3)]
        assert len({j.job_id for j in jobs}) == 3
        statuses = [status for r, status in wire.seen if r.method == "POST"]
        assert statuses.count(429) >= 2 and statuses.count(202) == 3
        assert time.monotonic() - started >= 1.5


@KINDS
async def test_a_wait_longer_than_the_budget_raises_at_once_with_retry_after(live: Live, kind: str) -> None:
    wire = Faulty(lambda request, n: problem(429, "backlog_full", retry_after="30"))
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        await Both(kind, live.url, live.new_key(), transport=wire, max_retry_wait=5).run("submit", fake_pdf("x"))
    assert time.monotonic() - started < 1.0
    assert (info.value.code, info.value.status, info.value.retry_after) == ("backlog_full", 429, 30.0)
    assert len(wire.seen) == 1

    budget = Faulty(lambda request, n: problem(503, "overloaded", retry_after="1"))
    with pytest.raises(ServiceUnavailableError) as info2:
        await Both(kind, live.url, live.new_key(), transport=budget, max_retry_wait=2.5).run("submit", fake_pdf("x"))
    assert len(budget.seen) == 3  # waited 1 s twice, a third wait would go over 2.5 s
    assert info2.value.code == "overloaded"


@KINDS
async def test_errors_are_typed_and_carry_the_problem_code(live: Live, kind: str) -> None:
    key = live.new_key()
    client = Both(kind, live.url, key)
    with pytest.raises(UnsupportedDocumentError) as e1:
        await client.run("extract", b"GIF89a not a pdf")
    assert (e1.value.code, e1.value.status) == ("not_a_pdf", 415)
    with pytest.raises(AuthenticationError) as e2:
        await Both(kind, live.url, "ctk_wrong").run("job", "00000000-0000-4000-8000-000000000000")
    assert e2.value.code == "unauthorized"
    with pytest.raises(NotFoundError):
        await client.run("job", "00000000-0000-4000-8000-000000000000")
    with pytest.raises(JobFailedError) as e3:
        await client.run("extract", fake_pdf("x", "corrupt"))
    assert e3.value.code == "corrupt_pdf" and e3.value.job_id
    with pytest.raises(JobFailedError) as e4:  # the same through the event stream
        await client.run("extract", fake_pdf("y", "encrypted"), progress=lambda d, t: None)
    assert e4.value.code == "encrypted_pdf"
    await client.run("submit", fake_pdf("one"), idempotency_key="order-1")
    with pytest.raises(IdempotencyConflictError) as e5:
        await client.run("submit", fake_pdf("another"), idempotency_key="order-1")
    assert (e5.value.code, e5.value.status) == ("idempotency_conflict", 409)
    with pytest.raises(WaitTimeoutError) as e6:
        await client.run("extract", fake_pdf("a%PAGEb%PAGEc", "slow"), timeout=1, server_wait=0)
    assert e6.value.code == "wait_timeout" and e6.value.job_id
    for status, code, expected in ((418, "teapot", ContracktClientError), (429, "new_cap", RateLimitedError)):
        odd = Faulty(lambda request, n, s=status, c=code: problem(s, c, retry_after="600"))
        with pytest.raises(ContracktClientError) as e7:
            await Both(kind, live.url, key, transport=odd).run("submit", fake_pdf("x"))
        assert type(e7.value) is expected and e7.value.code == code  # unknown codes are kept
    down = Both(kind, "http://127.0.0.1:9", key, max_retry_wait=1)
    with pytest.raises(APIConnectionError) as e8:
        await down.run("submit", fake_pdf("x"))
    assert e8.value.code == "transport_error"


async def test_an_altered_result_is_refused(live: Live) -> None:
    class Tamper(Faulty):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if request.method == "POST" and response.status_code == 200:
                body = json.loads(await response.aread())
                body["pages"][0]["text"] = "altered"
                return httpx.Response(200, json=body, headers={"x-job-id": response.headers["x-job-id"]})
            return response

    async with AsyncClient(live.url, live.new_key(), transport=Tamper()) as client:
        with pytest.raises(ResultIntegrityError):
            await client.extract(fake_pdf("genuine"))


@KINDS
async def test_listing_and_usage_through_the_client(live: Live, kind: str) -> None:
    key = live.new_key()
    client = Both(kind, live.url, key)
    for i in range(5):
        await client.run("extract", fake_pdf(f"doc {i}%PAGEscan: page two"))
    with pytest.raises(JobFailedError):
        await client.run("extract", fake_pdf("x", "corrupt"))
    page = await client.run("jobs", limit=2)
    assert len(page.jobs) == 2 and page.next_cursor
    assert page.jobs[0].status == "failed" and page.jobs[0].error["code"] == "corrupt_pdf"
    usage = await client.run("usage")
    assert usage.end == datetime.now(UTC).date() and len(usage.days) == 30
    assert usage.totals.pages == {"text_layer": 5, "ocr": 5, "total": 10}
    assert (usage.totals.jobs_completed, usage.totals.failed_by_code) == (5, {"corrupt_pdf": 1})


def test_contrackt_submit_uses_the_client_and_shows_each_page(live: Live) -> None:
    doc = live_doc = Path(os.environ.get("TMPDIR", "/tmp")) / f"ctk-submit-{os.getpid()}.pdf"
    live_doc.write_bytes(fake_pdf("primeira%PAGEsegunda%PAGEterceira", "slow"))
    try:
        key = live.new_key()
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
        cmd = [sys.executable, "-m", "contrackt.cli", "submit", str(doc), "--url", live.url, "--api-key", key]
        out = subprocess.run([*cmd, "--wait"], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "primeira\n\f\nsegunda\n\f\nterceira"
        assert [ln for ln in out.stderr.splitlines() if ln.startswith("page ")] == ["page 1/3", "page 2/3", "page 3/3"]
        accepted = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert accepted.returncode == 0, accepted.stderr
        assert json.loads(accepted.stdout)["status"] == "pending"
        refused = subprocess.run([*cmd[:-1], "ctk_wrong"], capture_output=True, text=True, env=env, timeout=60)
        assert refused.returncode == 1 and "unauthorized" in refused.stderr
    finally:
        live_doc.unlink()
