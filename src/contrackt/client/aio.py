"""``AsyncClient``: the Contrackt API from asyncio code (``Client`` runs this same code for blocking callers)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, overload

import httpx

from contrackt import __version__
from contrackt.client._follow import EVENTS_READ_S, Pages, Progress, follow_events, poll
from contrackt.client._retry import Retrying
from contrackt.client.errors import WaitTimeoutError, job_failed
from contrackt.client.models import Job, JobPage, Result, Submission, Usage

Document = str | os.PathLike[str] | bytes | IO[bytes]

SERVER_WAIT_S = 30  # how long extract() asks the API to hold a submission (?wait=) when nobody watches pages
MAGIC = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def media_type_of(data: bytes) -> str:
    """The body's Content-Type from its first bytes (the API checks them again)."""
    return next((media for magic, media in MAGIC if data.startswith(magic)), "application/pdf")


async def read_document(document: Document) -> bytes:
    if isinstance(document, bytes):
        return document
    if isinstance(document, str | os.PathLike):
        return await asyncio.to_thread(Path(document).read_bytes)
    return await asyncio.to_thread(document.read)


class AsyncClient:
    """The Contrackt API for asyncio code.

    Every call resends on 429 and 503, after the ``Retry-After`` the API gave, as long as one call's
    waits add up to at most ``max_retry_wait`` seconds (and within ``max_attempts`` sends); a
    broken connection is retried the same way with a short backoff. Submissions always carry an
    ``Idempotency-Key`` (one per ``extract`` call unless you pass your own), so a resent upload
    never makes a second job. Errors are ``contrackt.client.errors`` classes carrying the API's
    ``code``. Documents are sent as raw bodies: no file name leaves this machine.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        max_retry_wait: float = 120.0,
        max_attempts: int = 6,
        poll_interval: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"X-API-Key": api_key, "User-Agent": f"contrackt-python/{__version__}"},
            timeout=timeout,
            transport=transport,
        )
        self._retry = Retrying(self._http, max_retry_wait=max_retry_wait, max_attempts=max_attempts)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # Submitting -----------------------------------------------------------------------------

    async def submit(
        self,
        document: Document,
        *,
        idempotency_key: str | None = None,
        mode: str | None = None,
        engine: str | None = None,
        delete_on_read: bool | None = None,
    ) -> Submission:
        """Upload a document and return at once (202): the job's id, status and the document's SHA-256."""
        data = await read_document(document)
        answer = await self._submit(data, idempotency_key or _new_key(), mode, engine, delete_on_read, 0, "json")
        assert isinstance(answer, Submission)
        return answer

    async def _submit(
        self,
        data: bytes,
        key: str,
        mode: str | None,
        engine: str | None,
        delete_on_read: bool | None,
        wait: int,
        format: str,
    ) -> Submission | Result:
        params: dict[str, Any] = {"mode": mode, "engine": engine}
        if delete_on_read is not None:
            params["delete_on_read"] = "true" if delete_on_read else "false"
        if wait > 0:
            params.update(wait=wait, format=format)
        response = await self._retry.send(
            "POST",
            "/v1/extract",
            params={k: v for k, v in params.items() if v is not None},
            content=data,
            headers={"Content-Type": media_type_of(data), "Idempotency-Key": key},
            timeout=self.timeout + wait,
        )
        if response.status_code == 200:  # ?wait=N: the job completed in time; this is its result
            return Result.from_body(
                response.headers["x-job-id"],
                format,
                response.headers.get("content-type", ""),
                response.content,
                document_sha256=response.headers.get("x-document-sha256"),
            )
        return Submission.from_json(response.json())

    @overload
    async def extract(
        self,
        document: Document,
        *,
        wait: Literal[True] = ...,
        format: str = ...,
        progress: Progress | None = ...,
        timeout: float = ...,
        mode: str | None = ...,
        engine: str | None = ...,
        delete_on_read: bool | None = ...,
        idempotency_key: str | None = ...,
        server_wait: int | None = ...,
    ) -> Result: ...
    @overload
    async def extract(
        self,
        document: Document,
        *,
        wait: Literal[False],
        format: str = ...,
        progress: Progress | None = ...,
        timeout: float = ...,
        mode: str | None = ...,
        engine: str | None = ...,
        delete_on_read: bool | None = ...,
        idempotency_key: str | None = ...,
        server_wait: int | None = ...,
    ) -> Submission: ...

    async def extract(
        self,
        document: Document,
        *,
        wait: bool = True,
        format: str = "json",
        progress: Progress | None = None,
        timeout: float = 600.0,
        mode: str | None = None,
        engine: str | None = None,
        delete_on_read: bool | None = None,
        idempotency_key: str | None = None,
        server_wait: int | None = None,
    ) -> Result | Submission:
        """Upload a document and (with ``wait``) return its ``Result`` once the job has finished.

        Small documents come back in the submission's own answer (``?wait=``, at most
        ``server_wait`` seconds, by default 30, or 0 when ``progress`` is given, so that every page
        is reported). Otherwise the job is followed over its event stream, or by polling its
        status if the stream is refused or breaks. ``progress(done, total)`` is called whenever
        more pages are done. A failed job raises ``JobFailedError`` (``code``: the job's error
        code); no end within ``timeout`` seconds raises ``WaitTimeoutError`` (the job goes on).
        """
        data = await read_document(document)
        key = idempotency_key or _new_key()
        if not wait:
            return await self._submit(data, key, mode, engine, delete_on_read, 0, format)
        deadline = time.monotonic() + timeout
        hold = server_wait if server_wait is not None else (0 if progress else SERVER_WAIT_S)
        hold = max(0, min(60, hold, int(timeout)))
        answer = await self._submit(data, key, mode, engine, delete_on_read, hold, format)
        if isinstance(answer, Result):
            return answer
        if answer.status == "failed":
            raise job_failed(answer.job_id, answer.error)
        await self._wait(answer.job_id, deadline, progress)
        return replace(await self.result(answer.job_id, format=format), document_sha256=answer.document_sha256)

    # Following a job ------------------------------------------------------------------------

    async def wait(self, job_id: str, *, timeout: float = 600.0, progress: Progress | None = None) -> Job:
        """The job once it has completed; ``JobFailedError`` if it failed, ``WaitTimeoutError`` after ``timeout``."""
        return await self._wait(job_id, time.monotonic() + timeout, progress)

    async def _wait(self, job_id: str, deadline: float, progress: Progress | None) -> Job:
        tracker = Pages(progress)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                job = await follow_events(self._http, job_id, tracker, httpx.Timeout(self.timeout, read=EVENTS_READ_S))
                if job is None:
                    job = await poll(self.job, job_id, tracker, self.poll_interval)
        except TimeoutError:
            raise WaitTimeoutError(
                "The job did not finish in time; it goes on", code="wait_timeout", job_id=job_id
            ) from None
        if job.status == "failed":
            raise job_failed(job_id, job.error)
        if job.pages_total:
            await tracker.saw(job.pages_total, job.pages_total)
        return job

    # Reading --------------------------------------------------------------------------------

    async def job(self, job_id: str) -> Job:
        response = await self._retry.send("GET", f"/v1/jobs/{job_id}", job_id=job_id)
        return Job.from_json(response.json())

    async def result(self, job_id: str, *, format: str = "json") -> Result:
        """The finished job's result (``format``: json, text, or any other the API offers)."""
        response = await self._retry.send("GET", f"/v1/jobs/{job_id}/result", params={"format": format}, job_id=job_id)
        return Result.from_body(job_id, format, response.headers.get("content-type", ""), response.content)

    async def delete(self, job_id: str) -> Job:
        """Purge the job's document and result now (cancels it if unfinished)."""
        response = await self._retry.send("DELETE", f"/v1/jobs/{job_id}", job_id=job_id)
        return Job.from_json(response.json())

    async def jobs(self, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        """One page of this tenant's jobs, newest first; pass ``next_cursor`` on for the next."""
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        body = (await self._retry.send("GET", "/v1/jobs", params=params)).json()
        return JobPage([Job.from_json(j) for j in body["jobs"]], body.get("next_cursor"))

    async def iter_jobs(self, *, status: str | None = None, page_size: int = 100) -> AsyncIterator[Job]:
        """Every job of this tenant, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.jobs(status=status, limit=page_size, cursor=cursor)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def usage(self, start: date | None = None, end: date | None = None) -> Usage:
        """Pages by source and jobs by outcome for each UTC day of ``start..end`` (default: 30 days)."""
        params = {k: v.isoformat() for k, v in {"from": start, "to": end}.items() if v is not None}
        return Usage.from_json((await self._retry.send("GET", "/v1/usage", params=params)).json())


def _new_key() -> str:
    return f"ctk-sdk-{uuid.uuid4().hex}"
