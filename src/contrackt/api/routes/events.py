"""GET /v1/jobs/{id}/events: Server-Sent Events (queued, processing, page, completed/failed).

The stream follows the job row in the database, so it works whether the
worker runs in this process or on another machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from contrackt.api.deps import ContainerDep, StatusCaller
from contrackt.api.errors import problems
from contrackt.domain.jobs import JobStatus
from contrackt.services.results import job_view

router = APIRouter()

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
MAX_STREAM_SECONDS = 3600.0


def sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Live job events (text/event-stream)",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}, **problems(404)},
)
async def events(job_id: str, request: Request, caller: StatusCaller, c: ContainerDep) -> StreamingResponse:
    job = await c.reader.job(caller, job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        started = last_beat = loop.time()
        seen_status: JobStatus | None = None
        seen_pages = -1
        current = job
        yield sse("queued", job_view(current))
        while True:
            if current.status is not seen_status and current.status is JobStatus.PROCESSING:
                yield sse("processing", job_view(current))
            if current.status is JobStatus.PROCESSING or current.status.terminal:
                if current.pages_total and current.pages_done != seen_pages and current.pages_done > 0:
                    seen_pages = current.pages_done
                    yield sse("page", {"job_id": current.id, "n": current.pages_done, "of": current.pages_total})
            seen_status = current.status
            if current.status.terminal:
                yield sse(current.status.value, job_view(current))
                return
            now = loop.time()
            if now - started > MAX_STREAM_SECONDS or await request.is_disconnected():
                return
            if now - last_beat > KEEPALIVE_SECONDS:
                last_beat = now
                yield b": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)
            current = await c.reader.job(caller, job_id)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
