"""/metrics on a listener of its own (CONTRACKT_METRICS_LISTEN=host:port), in the API process.

``public`` (default) serves /metrics on the API's own port, ``off`` nowhere, and
``host:port`` on a second, tiny HTTP server in the same process and event loop,
so the public port can be published while metrics stay on a private address.
The socket is bound here, at start-up, so a taken port fails loudly at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from fastapi import FastAPI

from contrackt.bootstrap import Container

log = structlog.get_logger("contrackt.api")


def parse_listen(value: str) -> str | tuple[str, int]:
    """'public' | 'off' | 'host:port' ('[::1]:9100' for IPv6) -> the mode or (host, port)."""
    text = value.strip().lower()
    if text in ("public", "off"):
        return text
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"CONTRACKT_METRICS_LISTEN must be public, off or host:port, got {value!r}")
    return host, int(port)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the main one (this one is stopped by ``stop``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def metrics_app(container: Container) -> FastAPI:
    from contrackt.api.routes import metrics

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.container = container
    app.include_router(metrics.router)
    return app


class MetricsListener:
    """A second, tiny HTTP server in this process: ``metrics_app`` unless given another ``app``
    (the worker's listener serves health too: ``contrackt.worker.listener``)."""

    def __init__(
        self, container: Container, host: str, port: int, *, app: FastAPI | None = None, event: str = ""
    ) -> None:
        self.container = container
        self.host = host
        self.port = port
        self.app = app
        self.event = event or "api.metrics_listener"
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, reuse_port=False)
        self.port = sock.getsockname()[1]  # port 0 picks a free one (tests)
        config = uvicorn.Config(
            self.app or metrics_app(self.container),
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="contrackt-metrics-listener")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the metrics listener stopped at start-up")
            await asyncio.sleep(0.01)
        log.info(self.event, host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
        self._server = self._task = None
