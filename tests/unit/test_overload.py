"""Overload: per-key rate limits (GCRA), backpressure with a measured Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrackt.adapters.db.migrate import upgrade
from contrackt.adapters.db.tables import tenants
from contrackt.adapters.ratelimit.memory import MemoryRateLimiter, gcra
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.domain.errors import Overloaded
from contrackt.domain.ids import new_id
from contrackt.domain.jobs import Job, JobStatus
from contrackt.services.intake import RETRY_AFTER_MAX_S, retry_after_seconds
from contrackt.settings import Settings
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf

# ----------------------------------------------------------------------------- GCRA (pure, fake clock)


def run(times: list[float], limit: int, period: float) -> list[bool]:
    tat: float | None = None
    out = []
    for now in times:
        allowed, new_tat, decision = gcra(now if tat is None else tat, now, limit, period)
        assert decision.allowed is allowed
        assert 0 <= decision.remaining < limit
        if allowed:
            tat = new_tat
            assert decision.retry_after_s == 0
        else:
            assert decision.retry_after_s > 0
        out.append(allowed)
    return out


def test_gcra_allows_a_burst_of_the_limit_then_refuses() -> None:
    assert run([0.0] * 31, 30, 60.0) == [True] * 30 + [False]


def test_gcra_has_no_double_burst_at_a_window_edge() -> None:
    # A fixed window would let 30 through at 59.9 s and 30 more at 60.1 s.
    out = run([59.9] * 30 + [60.1] * 30, 30, 60.0)
    assert out[:30] == [True] * 30
    assert sum(out[30:]) == 0
    # one slot comes back every period/limit = 2 s, not a whole window at once
    out = run([59.9] * 30 + [61.85, 61.85, 61.95, 61.95, 63.95], 30, 60.0)
    assert out[30:] == [False, False, True, False, True]


def test_gcra_retry_after_says_when_the_next_request_passes() -> None:
    tat = 0.0
    for _ in range(30):
        _, tat, _ = gcra(tat, 0.0, 30, 60.0)
    allowed, _, decision = gcra(tat, 0.0, 30, 60.0)
    assert not allowed
    assert decision.retry_after_s == pytest.approx(2.0)
    assert decision.reset_s == pytest.approx(60.0)
    assert gcra(tat, decision.retry_after_s, 30, 60.0)[0]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), min_size=1, max_size=200),
    limit=st.integers(min_value=1, max_value=40),
)
def test_gcra_never_exceeds_limit_plus_refill_in_any_interval(gaps: list[float], limit: int) -> None:
    period = 60.0
    interval = period / limit
    times = []
    now = 0.0
    for g in gaps:
        now += g
        times.append(now)
    allowed = [t for t, ok in zip(times, run(times, limit, period), strict=True) if ok]
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = allowed[j] - start
            # burst of `limit`, then one more per interval: never two bursts back to back
            assert j - i + 1 <= limit + int(span / interval + 1e-9)


async def test_memory_limiter_counts_keys_separately() -> None:
    limiter = MemoryRateLimiter()
    clock = [100.0]
    limiter._now = lambda: clock[0]
    assert all([(await limiter.hit("a", 2, 60.0)).allowed for _ in range(2)])
    assert not (await limiter.hit("a", 2, 60.0)).allowed
    assert (await limiter.hit("b", 2, 60.0)).allowed
    clock[0] += 30.0
    assert (await limiter.hit("a", 2, 60.0)).allowed


# ----------------------------------------------------------------------------- through the API


async def _app(settings: Settings, *, run_worker: bool) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    fake = FakeExtractor()
    app = create_app(container=c, run_worker=run_worker, worker_factory=lambda c: WorkerRuntime(c, fake))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield http, c
    finally:
        await c.close()


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    s = embedded_settings(tmp_path / "home", rate_limit_extract="3/minute", rate_limit_status="5/minute")
    async for pair in _app(s, run_worker=True):
        yield pair


@pytest.fixture
async def small_queue(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    # No worker: jobs stay pending, so the queue fills up.
    s = embedded_settings(tmp_path / "home", max_queue_depth=2)
    async for pair in _app(s, run_worker=False):
        yield pair


def assert_rate_headers(r: httpx.Response, limit: int) -> None:
    assert r.headers["RateLimit-Limit"] == str(limit)
    assert int(r.headers["RateLimit-Remaining"]) >= 0
    assert int(r.headers["RateLimit-Reset"]) >= 0


async def test_extract_over_the_limit_answers_429_with_headers(limited: tuple[httpx.AsyncClient, Container]) -> None:
    http, c = limited
    key = await c.tenants.create("acme")
    h = {"X-API-Key": key.api_key}
    for i in range(3):
        r = await http.post("/v1/extract", headers=h, content=fake_pdf(f"doc {i}"))
        assert r.status_code == 202, r.text
        assert_rate_headers(r, 3)
        assert r.headers["RateLimit-Remaining"] == str(2 - i)
    r = await http.post("/v1/extract", headers=h, content=fake_pdf("one too many"))
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 20  # one slot every 60/3 s
    assert_rate_headers(r, 3)
    assert r.headers["RateLimit-Remaining"] == "0"
    # another key of the same tenant has its own allowance
    other = await c.tenants.create_key(key.tenant_id)
    r = await http.post("/v1/extract", headers={"X-API-Key": other.api_key}, content=fake_pdf("x"))
    assert r.status_code == 202


async def test_status_limit_is_separate_from_extract(limited: tuple[httpx.AsyncClient, Container]) -> None:
    http, c = limited
    key = await c.tenants.create("acme")
    h = {"X-API-Key": key.api_key}
    job_id = (await http.post("/v1/extract", headers=h, content=fake_pdf("doc"))).json()["job_id"]
    codes = [(await http.get(f"/v1/jobs/{job_id}", headers=h)).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    # extract still has its own allowance
    assert (await http.post("/v1/extract", headers=h, content=fake_pdf("doc 2"))).status_code == 202


async def test_tenant_override_from_the_tenants_table(limited: tuple[httpx.AsyncClient, Container]) -> None:
    http, c = limited
    key = await c.tenants.create("big customer")
    async with c.uow(system=True) as uow:
        await uow.conn.execute(  # type: ignore[attr-defined]
            tenants.update()
            .where(tenants.c.id == key.tenant_id)
            .values(rate_limit_extract="6/minute", rate_limit_status="2/minute")
        )
    h = {"X-API-Key": key.api_key}
    answers = [await http.post("/v1/extract", headers=h, content=fake_pdf(f"d{i}")) for i in range(7)]
    assert [r.status_code for r in answers] == [202] * 6 + [429]
    job_id = answers[0].json()["job_id"]
    r = await http.get(f"/v1/jobs/{job_id}", headers=h)
    assert r.status_code == 200
    assert_rate_headers(r, 2)
    assert (await http.get(f"/v1/jobs/{new_id()}", headers=h)).status_code == 404
    r = await http.get(f"/v1/jobs/{job_id}", headers=h)
    assert r.status_code == 429
    assert_rate_headers(r, 2)


# ----------------------------------------------------------------------------- backpressure


def test_retry_after_is_backlog_over_throughput_clipped() -> None:
    assert retry_after_seconds(100, 1.0) == 100
    assert retry_after_seconds(10, 4.0) == 3
    assert retry_after_seconds(1, 50.0) == 1
    assert retry_after_seconds(10_000, 1.0) == RETRY_AFTER_MAX_S
    assert retry_after_seconds(5, 0.0) == RETRY_AFTER_MAX_S


async def test_overloaded_answers_503_and_status_keeps_answering(
    small_queue: tuple[httpx.AsyncClient, Container],
) -> None:
    http, c = small_queue
    key = await c.tenants.create("acme")
    h = {"X-API-Key": key.api_key}
    jobs = []
    for i in range(2):
        r = await http.post("/v1/extract", headers=h, content=fake_pdf(f"d{i}"))
        assert r.status_code == 202
        jobs.append(r.json()["job_id"])
    r = await http.post("/v1/extract", headers=h, content=fake_pdf("refused"))
    assert r.status_code == 503
    assert r.json()["code"] == "overloaded"
    # nothing finished in the window: come back at the cap
    assert r.headers["Retry-After"] == str(RETRY_AFTER_MAX_S)
    for job_id in jobs:
        s = await http.get(f"/v1/jobs/{job_id}", headers=h)
        assert s.status_code == 200 and s.json()["status"] == "pending"
    assert (await http.get(f"/v1/jobs/{jobs[0]}/result", headers=h)).status_code == 409
    assert (await http.get("/v1/health/live")).status_code == 200


async def test_retry_after_follows_measured_throughput(small_queue: tuple[httpx.AsyncClient, Container]) -> None:
    http, c = small_queue
    key = await c.tenants.create("acme")
    h = {"X-API-Key": key.api_key}
    now = c.clock.now()
    # 600 jobs finished in the last five minutes = 2 jobs/s
    async with c.uow(key.tenant_id) as uow:
        for n in range(600):
            at = now - timedelta(seconds=1 + n * 0.45)
            await uow.jobs.add(
                Job(id=new_id(), tenant_id=key.tenant_id, status=JobStatus.COMPLETED, created_at=at, completed_at=at)
            )
        old = now - timedelta(minutes=30)  # outside the window: not counted
        await uow.jobs.add(
            Job(id=new_id(), tenant_id=key.tenant_id, status=JobStatus.FAILED, created_at=old, completed_at=old)
        )
    for i in range(2):
        assert (await http.post("/v1/extract", headers=h, content=fake_pdf(f"d{i}"))).status_code == 202
    r = await http.post("/v1/extract", headers=h, content=fake_pdf("refused"))
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"  # 2 unfinished at 2 jobs/s
    with pytest.raises(Overloaded) as err:
        await c.intake.check_capacity()
    assert err.value.retry_after == 1
