"""`contrackt worker`'s own listener (CONTRACKT_WORKER_LISTEN, default 127.0.0.1:9100, ``off``: none).

It serves what an orchestrator and Prometheus ask a worker: ``GET /v1/health/live`` (the
runtime's loops are alive), ``GET /v1/health/ready`` (the OCR engine is warm and the
database, queue and storage answer: the API's own checks) and ``GET /metrics``. It starts
before the runtime, so a taken port fails before the models load and liveness answers while
they do (readiness says ``starting``), and stops after it, so probes see the worker drain.
"""

from __future__ import annotations

from fastapi import FastAPI

from contrackt.api.metrics_listener import MetricsListener, parse_listen
from contrackt.bootstrap import Container
from contrackt.worker.runtime import WorkerRuntime


def parse_worker_listen(value: str) -> tuple[str, int] | None:
    """'off' -> None; 'host:port' ('[::1]:9100' for IPv6) -> (host, port)."""
    try:
        parsed = parse_listen(value)
    except ValueError:
        parsed = "public"  # refused below, with this setting's name
    if parsed == "off":
        return None
    if isinstance(parsed, tuple):
        return parsed
    raise ValueError(f"CONTRACKT_WORKER_LISTEN must be off or host:port, got {value!r}")


def worker_app(container: Container, runtime: WorkerRuntime) -> FastAPI:
    from contrackt.api.routes import health, metrics

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.container = container
    app.state.runtime = runtime
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app


def worker_listener(container: Container, runtime: WorkerRuntime) -> MetricsListener | None:
    """The listener CONTRACKT_WORKER_LISTEN asks for (not started), or None for ``off``."""
    listen = parse_worker_listen(container.settings.worker_listen)
    if listen is None:
        return None
    host, port = listen
    return MetricsListener(container, host, port, app=worker_app(container, runtime), event="worker.listener")
