"""``POST /v1/extract?wait=N``: wait up to N seconds for the new job to finish.

The wait holds no database transaction and runs no query of its own: it subscribes to the
process's shared ``JobWatcher`` (the one the event streams use, services/watch.py), which reads
every watched job in one query per tick. It takes one slot of the API key's event-stream cap
(CONTRACKT_MAX_STREAMS_PER_KEY): a waiting request holds a connection and a subscription just
as a stream does. When the key has no slot left, the request does not wait, and is answered
202 at once: the job was accepted, and a refusal now would read as if it had not been.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request

from contrackt.api.edge import Edge
from contrackt.domain.errors import TooManyStreams
from contrackt.domain.jobs import Job

MAX_WAIT_SECONDS = 60
WAKE_SECONDS = 1.0  # how often a quiet wait looks whether its client is still there


@dataclass(frozen=True)
class Waited:
    """The job as last seen, and how the wait ended: ``completed`` / ``failed`` (the job is
    terminal), ``timeout``, ``too_many_streams``, ``unauthorized`` (key revoked meanwhile),
    ``client_gone``."""

    job: Job
    outcome: str


async def wait_for_job(edge: Edge, job: Job, api_key_id: str, seconds: float, request: Request) -> Waited:
    if job.status.terminal:
        return Waited(job, job.status.value)  # an idempotent replay of a finished job
    try:
        slot = edge.admission.stream(api_key_id)
    except TooManyStreams:
        return Waited(job, "too_many_streams")
    sub = edge.watcher.subscribe(job, api_key_id)
    gone = asyncio.create_task(_disconnected(request), name="contrackt-wait-disconnect")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        current = sub.job
        while not current.status.terminal:
            if sub.ended is not None:
                return Waited(current, sub.ended)
            left = deadline - loop.time()
            if left <= 0:
                return Waited(current, "timeout")
            if gone.done():
                return Waited(current, "client_gone")
            current = await sub.next(min(WAKE_SECONDS, left))
        return Waited(current, current.status.value)
    finally:
        gone.cancel()
        edge.watcher.unsubscribe(sub)
        slot.release()


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone. The body was read whole already, so the next ASGI
    message is the disconnect. (``Request.is_disconnected`` never sees it behind Starlette's
    BaseHTTPMiddleware: its receive cannot run inside the cancelled scope that check uses.)"""
    while True:
        if (await request.receive())["type"] == "http.disconnect":
            return
        await asyncio.sleep(WAKE_SECONDS)  # a server that answers with empty body messages: no busy loop
