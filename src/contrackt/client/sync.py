"""``Client``: the blocking face of ``AsyncClient``.

It runs the very same ``AsyncClient`` on an event loop of its own, in a thread it owns, so the
two behave alike in every respect (retries, idempotency keys, errors, event streams) and a
blocking caller may use it anywhere, even where an event loop already runs (a notebook, a web
handler). The progress callback is called from that thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import date
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from contrackt.client._follow import Progress
from contrackt.client.aio import AsyncClient, Document
from contrackt.client.models import Job, JobPage, Result, Submission, Usage

T = TypeVar("T")


class Client:
    """The Contrackt API for blocking code; the same arguments and methods as ``AsyncClient``.

    >>> with Client("http://127.0.0.1:8000", api_key) as client:
    ...     result = client.extract("contract.pdf")
    ...     print(result.pages[0].lines[0].text)
    """

    def __init__(self, url: str, api_key: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="contrackt-client", daemon=True)
        self._thread.start()
        self._closed = False
        self._async = self._run(_make(url, api_key, options))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # an interrupted caller (Ctrl-C) stops the call on the loop too
            raise

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._async.aclose())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def submit(
        self,
        document: Document,
        *,
        idempotency_key: str | None = None,
        mode: str | None = None,
        engine: str | None = None,
        delete_on_read: bool | None = None,
    ) -> Submission:
        return self._run(
            self._async.submit(
                document, idempotency_key=idempotency_key, mode=mode, engine=engine, delete_on_read=delete_on_read
            )
        )

    @overload
    def extract(
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
    def extract(
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

    def extract(
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
        """See ``AsyncClient.extract``."""
        options: dict[str, Any] = {
            "format": format,
            "progress": progress,
            "timeout": timeout,
            "mode": mode,
            "engine": engine,
            "delete_on_read": delete_on_read,
            "idempotency_key": idempotency_key,
            "server_wait": server_wait,
        }
        if wait:
            return self._run(self._async.extract(document, wait=True, **options))
        return self._run(self._async.extract(document, wait=False, **options))

    def wait(self, job_id: str, *, timeout: float = 600.0, progress: Progress | None = None) -> Job:
        return self._run(self._async.wait(job_id, timeout=timeout, progress=progress))

    def job(self, job_id: str) -> Job:
        return self._run(self._async.job(job_id))

    def result(self, job_id: str, *, format: str = "json") -> Result:
        return self._run(self._async.result(job_id, format=format))

    def delete(self, job_id: str) -> Job:
        return self._run(self._async.delete(job_id))

    def jobs(self, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        return self._run(self._async.jobs(status=status, limit=limit, cursor=cursor))

    def iter_jobs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        cursor: str | None = None
        while True:
            page = self.jobs(status=status, limit=page_size, cursor=cursor)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def usage(self, start: date | None = None, end: date | None = None) -> Usage:
        return self._run(self._async.usage(start, end))


async def _make(url: str, api_key: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(url, api_key, **options)  # built on the loop that will run it
