"""The API on a loopback port, served by uvicorn on a thread and event loop of its own (embedded
backends, a fake extractor), and an httpx transport that records requests and injects faults.

Clients under test talk to it over real HTTP, from any thread or loop: the blocking client runs
its own loop, which an in-process ASGI transport could not share with the app's.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from contrackt.adapters.db.migrate import upgrade
from contrackt.api.app import create_app
from contrackt.bootstrap import Container, build
from contrackt.ports.extractor import Extractor
from contrackt.worker.runtime import WorkerRuntime
from tests.conftest import embedded_settings
from tests.fakes import FakeExtractor

T = TypeVar("T")


class _QuietServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # signals belong to pytest's main thread
        yield


@dataclass
class Live:
    url: str
    loop: asyncio.AbstractEventLoop
    container: Container
    app: Any

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (its database engine lives there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def new_key(self, name: str = "acme") -> str:
        return self.call(self.container.tenants.create(name)).api_key


@contextmanager
def live_server(tmp_path: Path, extractor: Extractor | None = None, **overrides: object) -> Iterator[Live]:
    settings = embedded_settings(tmp_path / "home", **overrides)
    upgrade(settings.db_url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    container = build(settings)
    fake = extractor or FakeExtractor()
    app = create_app(container=container, run_worker=True, worker_factory=lambda c: WorkerRuntime(c, fake))
    server = _QuietServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            loop.run_until_complete(container.close())

    thread = threading.Thread(target=run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server thread ended before it started serving"
        assert time.monotonic() < deadline, "the server did not start in 30 s"
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", loop, container, app)
    finally:
        server.should_exit = True
        thread.join(30)
        loop.close()
        sock.close()


Rule = Callable[[httpx.Request, int], "httpx.Response | Exception | str | None"]


@dataclass
class Faulty(httpx.AsyncBaseTransport):
    """Passes requests to the real server, except where ``rule(request, n)`` says otherwise
    (``n``: how many requests to the same method and path came before, from 0):

    * an ``httpx.Response``: answered instead, the server never sees the request;
    * an exception: raised instead (the server never sees the request);
    * ``"lose"``: sent to the server, then the answer is dropped and ``httpx.ReadError`` raised;
    * None: sent as is.
    """

    rule: Rule | None = None
    inner: httpx.AsyncBaseTransport = field(default_factory=httpx.AsyncHTTPTransport)
    seen: list[tuple[httpx.Request, int | None]] = field(default_factory=list)  # (request, status or None)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r, _ in self.seen if r.method == method and r.url.path == path)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        n = self.count(request.method, request.url.path)
        verdict = self.rule(request, n) if self.rule else None
        if isinstance(verdict, httpx.Response):
            self.seen.append((request, verdict.status_code))
            return verdict
        if isinstance(verdict, Exception):
            self.seen.append((request, None))
            raise verdict
        response = await self.inner.handle_async_request(request)
        if verdict == "lose":
            await response.aread()
            await response.aclose()
            self.seen.append((request, None))
            raise httpx.ReadError("connection lost (injected)", request=request)
        self.seen.append((request, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def problem(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/problem+json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"type": f"https://contrackt.dev/problems/{code}", "title": code, "status": status, "detail": code}
    body["code"] = code
    return httpx.Response(status, json=body, headers=headers)
