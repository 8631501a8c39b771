"""GET /metrics (Prometheus text format), with the queue's figures read through a short cache."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contrackt.api.deps import ContainerDep
from contrackt.queue_gauges import QUEUE_GAUGES

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(c: ContainerDep) -> Response:
    await QUEUE_GAUGES.refresh(c.queue)  # bounded in time; a failure leaves the last figures, marked stale
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
