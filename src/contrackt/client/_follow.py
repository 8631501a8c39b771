"""Following a job to its end: its event stream first, polling its status when the stream fails."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import httpx

from contrackt.client._retry import raise_for
from contrackt.client.errors import error_for
from contrackt.client.models import Job
from contrackt.client.sse import EventParser

Progress = Callable[[int, int], object]  # (pages done, pages in all); may return an awaitable
EVENTS_READ_S = 45.0  # the API sends a keep-alive every 15 s on a quiet event stream


class Pages:
    """Calls the progress callback once per new count of pages done."""

    def __init__(self, callback: Progress | None) -> None:
        self.callback = callback
        self.done = 0

    async def saw(self, done: int, total: int) -> None:
        if self.callback is None or done <= self.done or total <= 0:
            return
        self.done = done
        outcome = self.callback(done, total)
        if inspect.isawaitable(outcome):
            await outcome


async def follow_events(http: httpx.AsyncClient, job_id: str, pages: Pages, timeout: httpx.Timeout) -> Job | None:
    """The finished job, from ``GET /v1/jobs/{id}/events``; None when the stream is refused
    (429 ``too_many_streams``, 503, a proxy that does not stream) or breaks, so the caller
    polls instead. 401 and 404 raise, as does an ``error`` event (the key was revoked)."""
    try:
        async with http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if response.status_code != 200:
                await response.aread()
                if response.status_code in (401, 404):
                    raise_for(response, job_id)
                return None
            parser = EventParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is None:
                    continue
                if event.name == "page":
                    await pages.saw(int(event.data.get("n") or 0), int(event.data.get("of") or 0))
                elif event.name in ("completed", "failed"):
                    return Job.from_json(event.data)
                elif event.name == "error":
                    code = str(event.data.get("code") or "stream_error")
                    status = 401 if code == "unauthorized" else 500
                    raise error_for(status, {"code": code, "detail": event.data.get("message")}, job_id=job_id)
    except httpx.TransportError:
        return None
    return None  # the stream ended without a final event (the API ends a stream after an hour)


async def poll(get_job: Callable[[str], Awaitable[Job]], job_id: str, pages: Pages, interval: float) -> Job:
    """The finished job, asking for its status every ``interval`` seconds."""
    while True:
        job = await get_job(job_id)
        if job.pages_total:
            await pages.saw(job.pages_done, job.pages_total)
        if job.finished:
            return job
        await asyncio.sleep(interval)
