"""GET /v1/jobs/{id}/events: Server-Sent Events (queued, processing, page, completed/failed).

The stream follows the job row in the database through the process's one
``JobWatcher`` (services/watch.py), so it works whether the worker runs in
this process or on another machine, and open streams cost no database work of
their own.  At most CONTRACKT_MAX_STREAMS_PER_KEY streams per API key (429
``too_many_streams``); a stream whose key is revoked ends within seconds with
``event: error`` (``{"code": "unauthorized", ...}``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from contrackt.api.deps import ContainerDep, EdgeDep, StatusCaller
from contrackt.api.errors import problems
from contrackt.domain.jobs import JobStatus
from contrackt.services.results import job_view
from contrackt.services.watch import Subscription

router = APIRouter()

WAKE_SECONDS = 1.0  # a quiet stream still looks at its client and its deadline this often
KEEPALIVE_SECONDS = 15.0
MAX_STREAM_SECONDS = 3600.0
ENDED = {"unauthorized": "The API key is no longer valid"}


def sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class EventStream(StreamingResponse):
    """A streaming response that runs ``on_close`` however the stream ends (finished,
    client gone, cancelled): the subscription and the stream slot are always given back."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Live job events (text/event-stream)",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}, **problems(404)},
)
async def events(job_id: str, request: Request, caller: StatusCaller, c: ContainerDep, e: EdgeDep) -> StreamingResponse:
    job = await c.reader.job(caller, job_id)  # 404 before the stream starts (and before any subscription)
    slot = e.admission.stream(caller.api_key_id)  # 429 too_many_streams
    sub = e.watcher.subscribe(job, caller.api_key_id)

    def close() -> None:
        e.watcher.unsubscribe(sub)
        slot.release()

    return EventStream(
        _stream(sub, request),
        on_close=close,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(sub: Subscription, request: Request) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    started = last_beat = loop.time()
    seen_status: JobStatus | None = None
    seen_pages = -1
    current = sub.job
    yield sse("queued", job_view(current))
    while True:
        if sub.ended is not None:
            yield sse("error", {"code": sub.ended, "message": ENDED.get(sub.ended, "The stream ended")})
            return
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
        current = await sub.next(WAKE_SECONDS)
