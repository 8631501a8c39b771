"""The API edge's shared parts, built in the app's lifespan: body limits, admission caps,
the event-stream watcher, the failed-authentication throttle and the metrics listener
(docs/adr/0008-the-edge.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrackt.api.admission import Admission
from contrackt.api.auth_throttle import AuthThrottle
from contrackt.api.client_address import parse_trusted
from contrackt.api.metrics_listener import MetricsListener, parse_listen
from contrackt.api.upload import BodyLimits
from contrackt.bootstrap import Container
from contrackt.services.watch import JobWatcher
from contrackt.settings import Settings


def docs_options(settings: Settings) -> dict[str, Any]:
    """FastAPI's docs arguments: CONTRACKT_PUBLIC_DOCS=false removes /docs, /redoc and /openapi.json."""
    if settings.public_docs:
        return {}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}


def metrics_on_public_port(settings: Settings) -> bool:
    """Also checks the edge's settings, so a bad value fails when the app is created."""
    parse_trusted(settings.trusted_proxies)
    return parse_listen(settings.metrics_listen) == "public"


@dataclass
class Edge:
    body: BodyLimits
    admission: Admission
    watcher: JobWatcher
    auth: AuthThrottle
    metrics: MetricsListener | None = None

    @classmethod
    def build(cls, c: Container) -> Edge:
        s = c.settings
        listen = parse_listen(s.metrics_listen)
        hash_key = s.client_hash_key.get_secret_value().encode() if s.client_hash_key else None
        return cls(
            body=BodyLimits(s.max_upload_bytes, s.max_multipart_parts, s.body_timeout_seconds),
            admission=Admission(s),
            watcher=JobWatcher(c.uow),
            auth=AuthThrottle(c.limiter, s.auth_failure_limit, parse_trusted(s.trusted_proxies), hash_key),
            metrics=MetricsListener(c, *listen) if isinstance(listen, tuple) else None,
        )

    async def start(self) -> None:
        await self.watcher.start()
        if self.metrics is not None:
            await self.metrics.start()

    async def stop(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        await self.watcher.stop()
