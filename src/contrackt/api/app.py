"""FastAPI app factory and lifespan (adapters built at start-up, closed at shutdown)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response

from contrackt import __version__
from contrackt.api import errors
from contrackt.api.edge import Edge, docs_options, metrics_on_public_port
from contrackt.api.routes import console, events, extract, health, jobs, listing, metrics, receipts, webhooks
from contrackt.bootstrap import Container, build
from contrackt.metrics import HTTP_REQUESTS, HTTP_SECONDS
from contrackt.settings import Settings
from contrackt.worker.runtime import WorkerRuntime, relay_loop

log = structlog.get_logger("contrackt.api")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def create_app(
    settings: Settings | None = None,
    *,
    container: Container | None = None,
    run_worker: bool = False,
    migrate: bool = False,
    worker_factory: Callable[[Container], WorkerRuntime] | None = None,
) -> FastAPI:
    """``run_worker``: also consume jobs in this process (``contrackt serve``)."""
    settings = settings or (container.settings if container is not None else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = container or build(settings)
        if migrate:
            from contrackt.adapters.db.migrate import upgrade

            await asyncio.to_thread(upgrade, c.settings.db_url)
        app.state.container = c
        app.state.edge = edge = Edge.build(c)
        await edge.start()
        runtime: WorkerRuntime | None = None
        relay: asyncio.Task[None] | None = None
        if run_worker:
            runtime = (worker_factory or WorkerRuntime)(c)
            app.state.runtime = runtime
            await runtime.start(relay=True)
        elif not c.settings.queue_url.startswith("memory://"):
            # A shared queue: publish right after intake. With the in-process queue a
            # separate `contrackt api` has no consumer; the workers relay the outbox.
            relay = relay_loop(c)
        try:
            yield
        finally:
            await edge.stop()
            if runtime is not None:
                await runtime.stop(c.settings.shutdown_grace_seconds)
            if relay is not None:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
            if container is None:
                await c.close()

    app = FastAPI(
        title="Contrackt",
        version=__version__,
        summary="Private document extraction: upload a PDF, get its text.",
        lifespan=lifespan,
        **docs_options(settings),
    )
    errors.install(app)
    for module in (extract, jobs, events, health, listing):
        app.include_router(module.router)
    if metrics_on_public_port(settings):
        app.include_router(metrics.router)
    app.include_router(receipts.router)
    app.include_router(webhooks.router)
    app.webhooks.include_router(webhooks.deliveries)
    if settings.console:
        app.include_router(console.build_router())

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.monotonic()
        try:
            response = await call_next(request)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(path, str(response.status_code)).inc()
        method = request.method if request.method in _METHODS else "OTHER"  # a client picks it: bound the labels
        HTTP_SECONDS.labels(method, path).observe(time.monotonic() - started)
        response.headers["X-Request-ID"] = request_id
        # the caller's tenant once its key was checked (deps.principal): the log pipeline's label
        tenant = getattr(request.state, "tenant_id", None)
        log.info(
            "http.request",
            method=request.method,
            route=path,
            status=response.status_code,
            duration_ms=int((time.monotonic() - started) * 1000),
            request_id=request_id,
            **({"tenant_id": tenant} if tenant else {}),
        )
        return response

    return app
