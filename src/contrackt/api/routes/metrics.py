"""GET /metrics (Prometheus text format), with the queue depth read at scrape time."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contrackt.api.deps import ContainerDep
from contrackt.metrics import QUEUE_DEPTH

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(c: ContainerDep) -> Response:
    try:
        QUEUE_DEPTH.set(await asyncio.wait_for(c.queue.depth(), 2.0))
    except Exception:
        QUEUE_DEPTH.set(float("nan"))  # the queue did not answer: say so, don't fail the scrape
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
