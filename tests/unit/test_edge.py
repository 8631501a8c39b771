"""The API edge in-process: multipart part cap and off-loop parsing, body timeout, upload caps,
failed-authentication throttle, docs and metrics off the public listener."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.api.client_address import client_address, parse_trusted
from contrackt.api.edge import Edge
from contrackt.api.upload import read_multipart_file
from contrackt.bootstrap import Container, build
from contrackt.domain.errors import TooManyParts
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor, fake_pdf

BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


class Api:
    def __init__(self, app: Any, container: Container) -> None:
        self.app = app
        self.c = container

    @property
    def edge(self) -> Edge:
        e: Edge = self.app.state.edge
        return e

    def client(self, address: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30)

    async def key(self, name: str = "acme") -> dict[str, str]:
        new = await self.c.tenants.create(name)
        return {"X-API-Key": new.api_key}


@asynccontextmanager
async def running(tmp_path: Path, *, worker: bool = True, **overrides: object) -> AsyncIterator[Api]:
    settings = embedded_settings(tmp_path / "home", **overrides)
    await asyncio.to_thread(upgrade, settings.db_url)
    c = build(settings)
    fake = FakeExtractor()
    app = create_app(container=c, run_worker=worker, worker_factory=lambda c: WorkerRuntime(c, fake))
    try:
        async with app.router.lifespan_context(app):
            yield Api(app, c)
    finally:
        await c.close()


def multipart(parts: list[tuple[str, bytes]], extra_empty: int = 0) -> bytes:
    out = b""
    for name, data in parts:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="x.pdf"\r\n\r\n'.encode()
        out += data + b"\r\n"
    out += f"--{BOUNDARY}\r\n\r\n\r\n".encode() * extra_empty
    return out + f"--{BOUNDARY}--\r\n".encode()


async def trickle(first: bytes, pause: float = 30.0) -> AsyncIterator[bytes]:
    """A body that sends its first bytes, then stalls."""
    yield first
    await asyncio.sleep(pause)
    yield b"never"


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------- multipart


async def test_multipart_over_the_part_cap_is_413_too_many_parts(tmp_path: Path) -> None:
    async with running(tmp_path, max_multipart_parts=4) as api, api.client() as http:
        h = await api.key()
        ok = multipart([("note", b"a"), ("file", fake_pdf("ok"))], extra_empty=2)  # 4 parts: at the cap
        r = await http.post("/v1/extract", headers={**h, "Content-Type": MULTIPART}, content=ok)
        assert r.status_code == 202, r.text
        over = multipart([("file", fake_pdf("too many"))], extra_empty=4)  # 5 parts
        r = await http.post("/v1/extract", headers={**h, "Content-Type": MULTIPART}, content=over)
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "too_many_parts"
        assert r.headers["connection"] == "close"  # the rest of such a body is never read
        assert api.edge.admission.uploads.in_use() == 0


async def empty_parts(total: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    part = f"--{BOUNDARY}\r\n\r\n\r\n".encode()
    body = part * (total // len(part)) + f"--{BOUNDARY}--\r\n".encode()
    for i in range(0, len(body), chunk):
        yield body[i : i + chunk]


async def max_loop_gap_while(work: Awaitable[Any]) -> tuple[float, float]:
    """(longest gap between two 5 ms ticks of the event loop, duration) while ``work`` runs."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    ticks = [started]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks.append(loop.time())

    task = asyncio.create_task(ticker())
    try:
        await work
    finally:
        ticks.append(loop.time())
        done.set()
        await task
    return max(b - a for a, b in itertools.pairwise(ticks)), loop.time() - started


async def test_multipart_parsing_leaves_the_event_loop_free() -> None:
    # 8 MiB of empty parts with the part cap out of the way: about half a second of parser CPU.
    # Parsed on the loop (as before) that is one long stall; in the parser thread the loop
    # keeps ticking.
    work = read_multipart_file(empty_parts(8 * 1024 * 1024), MULTIPART, 50 * 1024 * 1024, max_parts=10**9)
    gap, took = await max_loop_gap_while(asyncio.wait_for(_expect_no_file(work), 60))
    print(f"\nparsing 8 MiB of empty parts took {took:.2f} s; longest event-loop gap {gap * 1000:.0f} ms")
    assert gap < took / 2  # parsed on the loop, the gap would be the whole parse
    assert gap < 0.5


async def _expect_no_file(work: Awaitable[bytes]) -> None:
    with pytest.raises(Exception, match="no 'file' field"):
        await work


async def test_part_cap_stops_the_parser_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(TooManyParts):
        await read_multipart_file(empty_parts(50 * 1024 * 1024), MULTIPART, 50 * 1024 * 1024, max_parts=16)
    assert time.monotonic() - started < 5  # the first batch, not 50 MB of parsing


# ----------------------------------------------------------------------------- body timeout


@pytest.mark.parametrize("kind", ["raw", "multipart"])
async def test_a_body_that_does_not_arrive_in_time_is_408(tmp_path: Path, kind: str) -> None:
    async with running(tmp_path, body_timeout_seconds=0.5) as api, api.client() as http:
        h = await api.key()
        if kind == "raw":
            headers, first = {**h, "Content-Type": "application/pdf"}, b"%PDF-1.7\n"
        else:
            headers = {**h, "Content-Type": MULTIPART}
            first = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n%PDF'.encode()
        started = time.monotonic()
        r = await http.post("/v1/extract", headers=headers, content=trickle(first))
        took = time.monotonic() - started
        assert r.status_code == 408, r.text
        assert r.json()["code"] == "body_timeout"
        assert r.headers["connection"] == "close"
        assert 0.4 < took < 5
        assert api.edge.admission.uploads.in_use() == 0


# ----------------------------------------------------------------------------- upload caps


async def test_upload_caps_per_key_429_and_per_process_503(tmp_path: Path) -> None:
    async with (
        running(tmp_path, max_uploads_per_key=2, max_concurrent_uploads=3, body_timeout_seconds=2.0) as api,
        api.client() as http,
    ):
        a, b = await api.key("a"), await api.key("b")
        slots = api.edge.admission.uploads

        def slow(h: dict[str, str]) -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(http.post("/v1/extract", headers=h, content=trickle(b"%PDF-1.7\n")))

        held = [slow(a), slow(a)]
        await wait_for(lambda: slots.in_use() == 2)
        r = await http.post("/v1/extract", headers=a, content=fake_pdf("third of a"))
        assert r.status_code == 429
        assert r.json()["code"] == "too_many_uploads"
        assert int(r.headers["Retry-After"]) >= 1
        held.append(slow(b))
        await wait_for(lambda: slots.in_use() == 3)
        r = await http.post("/v1/extract", headers=b, content=fake_pdf("over the process cap"))
        assert r.status_code == 503
        body = r.json()
        assert body["code"] == "overloaded"
        assert int(r.headers["Retry-After"]) >= 1
        assert "3" not in body["detail"]  # no service-wide count in the answer
        # The held uploads end at the body timeout, and give their slots back.
        assert [r.status_code for r in await asyncio.gather(*held)] == [408, 408, 408]
        assert slots.in_use() == 0
        assert (await http.post("/v1/extract", headers=a, content=fake_pdf("fine now"))).status_code == 202
        assert slots.in_use() == 0


async def test_upload_slot_is_given_back_on_every_path(tmp_path: Path) -> None:
    async with running(tmp_path, max_upload_mb=1) as api, api.client() as http:
        h = await api.key()
        slots = api.edge.admission.uploads
        assert (await http.post("/v1/extract", headers=h, content=fake_pdf("ok"))).status_code == 202
        assert (await http.post("/v1/extract", headers=h, content=b"not a pdf")).status_code == 415
        assert (await http.post("/v1/extract", headers=h, content=b"%PDF" + b"x" * 2_000_000)).status_code == 413
        assert slots.in_use() == 0
        # The client goes away in the middle of the body.
        sent: list[dict[str, Any]] = []
        messages = iter(
            [{"type": "http.request", "body": b"%PDF-1.7\n", "more_body": True}, {"type": "http.disconnect"}]
        )

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "path": "/v1/extract",
            "raw_path": b"/v1/extract",
            "query_string": b"",
            "headers": [(b"x-api-key", h["X-API-Key"].encode()), (b"content-type", b"application/pdf")],
            "client": ("127.0.0.1", 40000),
            "server": ("test", 80),
            "scheme": "http",
            "root_path": "",
        }
        await api.app(scope, receive, send)
        assert sent[0]["status"] == 422  # a problem in the log, not a stack trace
        assert slots.in_use() == 0


# ----------------------------------------------------------------------------- failed authentication


async def test_failed_authentications_are_throttled_per_address(tmp_path: Path) -> None:
    async with running(tmp_path, auth_failure_limit="3/minute") as api:
        good = await api.key()
        bad = {"X-API-Key": "ctk_000000000000_" + "x" * 43}
        async with api.client("198.51.100.7") as attacker, api.client("198.51.100.8") as neighbour:
            codes = [(await attacker.get("/v1/jobs/x", headers=bad)).status_code for _ in range(3)]
            assert codes == [401, 401, 401]
            over = await attacker.get("/v1/jobs/x", headers=bad)
            assert over.status_code == 429
            assert over.json()["code"] == "rate_limited"
            assert int(over.headers["Retry-After"]) >= 1
            # While refused, a right key gets exactly the same answer as a wrong one.
            right = await attacker.get("/v1/jobs/x", headers=good)
            assert right.status_code == 429
            assert right.json() == over.json()
            assert (await attacker.get("/v1/jobs/x")).status_code == 429
            # Another address is not affected; successes are never counted.
            for _ in range(5):
                assert (await neighbour.get("/v1/jobs/x", headers=good)).status_code == 404
        # The limiter never sees the address in clear.
        keys = " ".join(api.c.limiter._tat)  # type: ignore[attr-defined]
        assert "authfail:" in keys
        assert "198.51.100" not in keys


async def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(tmp_path: Path) -> None:
    bad = {"X-API-Key": "ctk_000000000000_" + "y" * 43}
    async with running(tmp_path, auth_failure_limit="2/minute") as api, api.client("10.0.0.5") as http:
        # Not trusted: a forged header does not buy a fresh allowance.
        codes = [
            (await http.get("/v1/jobs/x", headers={**bad, "X-Forwarded-For": f"203.0.113.{i}"})).status_code
            for i in range(3)
        ]
        assert codes == [401, 401, 429]
    async with (
        running(tmp_path / "trusting", auth_failure_limit="2/minute", trusted_proxies="10.0.0.0/8") as api,
        api.client("10.0.0.5") as http,
    ):
        # Behind a trusted proxy, each client has its own allowance ...
        for i in range(3):
            r = await http.get("/v1/jobs/x", headers={**bad, "X-Forwarded-For": f"203.0.113.{i}"})
            assert r.status_code == 401
        # ... and what a client puts left of the proxy's entry changes nothing.
        codes = [
            (await http.get("/v1/jobs/x", headers={**bad, "X-Forwarded-For": f"1.2.3.{i}, 203.0.113.9"})).status_code
            for i in range(3)
        ]
        assert codes == [401, 401, 429]


def test_client_address_rules() -> None:
    trusted = parse_trusted("10.0.0.0/8, 192.0.2.1")
    assert client_address("203.0.113.1", ["198.51.100.1"], ()) == "203.0.113.1"  # untrusted: header ignored
    assert client_address("203.0.113.1", ["198.51.100.1"], trusted) == "203.0.113.1"  # peer not a proxy
    assert client_address("10.1.2.3", ["198.51.100.1"], trusted) == "198.51.100.1"
    assert client_address("10.1.2.3", ["6.6.6.6, 198.51.100.1, 192.0.2.1"], trusted) == "198.51.100.1"
    assert client_address("10.1.2.3", ["6.6.6.6", "198.51.100.1"], trusted) == "198.51.100.1"  # two headers
    assert client_address("10.1.2.3", ["garbage, 198.51.100.1"], trusted) == "198.51.100.1"
    assert client_address("10.1.2.3", ["198.51.100.1, garbage"], trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", ["[2001:db8::1]:443"], trusted) == "2001:db8::/64"
    assert client_address("2001:db8:0:1::5", [], ()) == client_address("2001:db8:0:1::6", [], ())
    assert client_address("::ffff:203.0.113.4", [], ()) == "203.0.113.4"
    assert client_address(None, [], ()) == "unknown"
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        parse_trusted("10.0.0.0/8, proxy.local")


# ----------------------------------------------------------------------------- docs and metrics


async def test_docs_can_be_taken_off_the_public_listener(tmp_path: Path) -> None:
    paths = ("/docs", "/redoc", "/openapi.json")
    async with running(tmp_path / "on", worker=False) as api, api.client() as http:
        assert [(await http.get(p)).status_code for p in paths] == [200, 200, 200]
    async with running(tmp_path / "off", worker=False, public_docs=False) as api, api.client() as http:
        assert [(await http.get(p)).status_code for p in paths] == [404, 404, 404]
        assert (await http.get("/v1/health/live")).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_off_or_on_a_listener_of_their_own(tmp_path: Path) -> None:
    async with running(tmp_path / "off", worker=False, metrics_listen="off") as api, api.client() as http:
        assert (await http.get("/metrics")).status_code == 404
    port = free_port()
    async with (
        running(tmp_path / "apart", worker=False, metrics_listen=f"127.0.0.1:{port}") as api,
        api.client() as http,
    ):
        assert (await http.get("/metrics")).status_code == 404
        async with httpx.AsyncClient(timeout=10) as direct:
            r = await direct.get(f"http://127.0.0.1:{port}/metrics")
            assert r.status_code == 200
            assert "contrackt_queue_depth" in r.text
            assert "contrackt_uploads_in_progress" in r.text
            assert (await direct.get(f"http://127.0.0.1:{port}/v1/health/live")).status_code == 404
    with socket.socket() as s:  # closed with the app
        assert s.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(ValueError, match="METRICS_LISTEN"):
        create_app(embedded_settings(tmp_path / "bad", metrics_listen="somewhere"))
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        create_app(embedded_settings(tmp_path / "bad", trusted_proxies="the load balancer"))
