"""``ProcessPoolExtractor``: the Extractor port over sandboxed, warm child processes.

Untrusted PDFs are parsed, rendered and OCR'd only in long-lived child processes
(``spawn`` context, never a fork of this possibly threaded process), each with
an address-space cap.  A document's pages are spread over every worker: pages
are handed out one at a time from a shared work list, so a 60-page scan keeps
all cores busy and a second document gets its turn between pages.

The pool is loop-agnostic: idle children live behind a ``threading.Lock`` and
waiters are woken with ``call_soon_threadsafe``, so one pool can serve several
asyncio tasks and even several event loops.  Pipe reads use ``loop.add_reader``
and never block the event loop; pipe writes (the PDF bytes) go through a small
thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from contrackt.adapters.ocr.engines import DEFAULT_ENGINE, ENGINES, ModelMissing, available_engines, check_engine
from contrackt.adapters.ocr.worker_child import (
    FAULT_ENGINES,
    FAULT_ENV,
    NETWORK_MODES,
    THREAD_ENV,
    ChildConfig,
    child_main,
)
from contrackt.domain.errors import (
    ContracktError,
    CorruptPdf,
    EncryptedPdf,
    ExtractionTimeout,
    InvalidRequest,
    ResourceLimit,
    TooManyPages,
    UnknownEngine,
)
from contrackt.domain.results import ExtractionResult, Page
from contrackt.ports.extractor import DocumentInfo, ExtractOptions, ProgressCallback

log = logging.getLogger(__name__)

MODES = ("auto", "ocr", "text")
START_TIMEOUT_S = 180.0
_STOP_JOIN_S = 2.0


class _ChildDied(Exception):
    """The child's pipe closed: it crashed, was killed by its limits, or exited."""


@dataclass(eq=False)
class _Child:
    proc: Any  # multiprocessing.Process (spawn context)
    conn: Any  # multiprocessing.connection.Connection
    kind: str
    docs: OrderedDict[str, None] = field(default_factory=OrderedDict)
    forget: set[str] = field(default_factory=set)
    dead: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid  # type: ignore[no-any-return]


class _Slots:
    """Idle children of one kind; FIFO waiters from any event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: deque[_Child] = deque()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[_Child]]] = deque()
        self.closed = False

    async def acquire(self) -> _Child:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.closed:
                    raise ContracktError("The extraction pool is closed")
                child = self._idle.popleft() if self._idle else None
                if child is None:
                    fut: asyncio.Future[_Child] = loop.create_future()
                    self._waiters.append((loop, fut))
            if child is None:
                try:
                    child = await fut
                except asyncio.CancelledError:
                    with self._lock:
                        with contextlib.suppress(ValueError):
                            self._waiters.remove((loop, fut))
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        self.release(fut.result())
                    raise
            if not child.dead and child.proc.is_alive():
                return child
            # died while idle: the pool's reaper replaces it; take another one

    def release(self, child: _Child) -> None:
        with self._lock:
            while self._waiters:
                loop, fut = self._waiters.popleft()
                if fut.done():
                    continue
                try:
                    loop.call_soon_threadsafe(self._deliver, fut, child)
                    return
                except RuntimeError:  # that loop is closed
                    continue
            self._idle.append(child)

    def _deliver(self, fut: asyncio.Future[_Child], child: _Child) -> None:
        if fut.done():
            self.release(child)
        else:
            fut.set_result(child)

    def drain(self) -> list[_Child]:
        with self._lock:
            self.closed = True
            idle = list(self._idle)
            self._idle.clear()
            waiters = list(self._waiters)
            self._waiters.clear()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_fail_future, fut)
        return idle

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)


def _fail_future(fut: asyncio.Future[_Child]) -> None:
    if not fut.done():
        fut.set_exception(ContracktError("The extraction pool is closed"))


@contextlib.contextmanager
def _thread_env() -> Iterator[None]:
    """Children inherit the environment at spawn: pin their math libraries."""
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(THREAD_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ProcessPoolExtractor:
    """Extractor over ``workers`` warm OCR children plus one light inspect child."""

    def __init__(
        self,
        workers: int,
        engine: str = DEFAULT_ENGINE,
        memory_limit_mb: int = 2048,
        page_timeout_s: float = 120,
        job_timeout_s: float = 900,
        inspect_timeout_s: float = 15,
        max_pages: int = 500,
        *,
        engines: Sequence[str] | None = None,
        zoom: float | None = None,
        max_pixels: int = 40_000_000,
        orientation: bool = True,
        fault_engines: bool | None = None,
        model_dirs: dict[str, str] | None = None,
        postcorrect: bool = True,
        latin: bool = True,
        network_isolation: str = "auto",
    ) -> None:
        """``engine`` is the deployment's default (loaded and self-tested in every
        child at start-up); ``engines`` the others a request may ask for (default:
        every installed one), each loaded by a child on its first page.  ``zoom``
        overrides every engine's render policy (tests, benchmarks)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if network_isolation not in NETWORK_MODES:
            raise ValueError(f"network_isolation must be one of {', '.join(NETWORK_MODES)}")
        # what the children reported at start-up: netns | userns+netns | off | unavailable: ...
        self.network: str | None = None
        if fault_engines is None:
            fault_engines = os.environ.get(FAULT_ENV, "") in ("1", "true", "yes")
        self.workers = workers
        self.engine = engine
        self.memory_limit_mb = memory_limit_mb
        self.page_timeout_s = page_timeout_s
        self.job_timeout_s = job_timeout_s
        self.inspect_timeout_s = inspect_timeout_s
        self.max_pages = max_pages
        self.fault_engines = bool(fault_engines)
        self.model_dirs = dict(model_dirs or {})
        if engine not in ENGINES:
            raise UnknownEngine(f"Unknown OCR engine: {engine}")
        if engines is None:
            enabled = [e for e in available_engines(self.model_dirs) if e != engine]
        else:
            unknown = [e for e in engines if e not in ENGINES]
            if unknown:
                raise UnknownEngine(f"Unknown OCR engine: {', '.join(unknown)}")
            enabled = [e for e in dict.fromkeys(engines) if e != engine]
        self._enabled = [engine, *enabled]
        self._ctx = mp.get_context("spawn")
        self._worker_cfg = ChildConfig(
            kind="worker",
            engine=engine,
            extra_engines=tuple(enabled),
            memory_limit_mb=memory_limit_mb,
            zoom=zoom,
            max_pixels=max_pixels,
            fault_engines=self.fault_engines,
            orientation=orientation,
            model_dirs=tuple(sorted(self.model_dirs.items())),
            postcorrect=postcorrect,
            latin=latin,
            network_isolation=network_isolation,
        )
        self._inspect_cfg = ChildConfig(
            kind="inspect", engine=engine, memory_limit_mb=memory_limit_mb, network_isolation=network_isolation
        )
        self._work = _Slots()
        self._insp = _Slots()
        self._children: set[_Child] = set()
        self._children_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._io = ThreadPoolExecutor(max_workers=workers + 2, thread_name_prefix="ocr-pipe")
        self._req_ids = itertools.count(1)
        self.restarts = 0  # children replaced after a crash or timeout (observability)

    # ------------------------------------------------------------------ lifecycle

    def engines(self) -> list[str]:
        names = list(self._enabled)
        if self.fault_engines:
            names += list(FAULT_ENGINES)
        return names

    def self_test(self) -> None:
        """Fail loudly (``ContracktError`` naming the file) if an enabled engine's
        package or model is missing.  Cheap: looks at the disk, loads nothing; the
        children then load the default engine and run it once before ``ready``."""
        for name in self._enabled:
            try:
                check_engine(name, self.model_dirs.get(name))
            except ModelMissing as exc:
                raise ContracktError(f"OCR self-test failed: {exc}") from None

    def child_pids(self) -> list[int]:
        """Process ids of the live children (benchmarks read their peak RSS)."""
        with self._children_lock:
            return [c.pid for c in self._children if c.pid is not None and not c.dead]

    async def start(self) -> None:
        if self._started:
            return
        await asyncio.get_running_loop().run_in_executor(self._io, self._start_sync)

    def _start_sync(self) -> None:
        with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise ContracktError("The extraction pool is closed")
            self.self_test()
            pending = [self._spawn(self._worker_cfg) for _ in range(self.workers)]
            pending.append(self._spawn(self._inspect_cfg))
            try:
                for child in pending:
                    self._await_ready(child, START_TIMEOUT_S)
            except Exception:
                for child in pending:
                    self._kill(child)
                raise
            for child in pending:
                (self._work if child.kind == "worker" else self._insp).release(child)
            self._started = True

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._closed = True
        idle = self._work.drain() + self._insp.drain()
        for child in idle:
            with contextlib.suppress(OSError, ValueError):
                child.conn.send(("stop",))
        with self._children_lock:
            children = list(self._children)
        deadline = time.monotonic() + _STOP_JOIN_S
        for child in children:
            if child in idle:
                child.proc.join(max(0.0, deadline - time.monotonic()))
            self._kill(child)
        self._io.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ children

    def _spawn(self, config: ChildConfig) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=child_main,
            args=(child_conn, config),
            name=f"contrackt-ocr-{config.kind}",
            daemon=True,
        )
        with _thread_env():
            proc.start()
        child_conn.close()
        child = _Child(proc=proc, conn=parent_conn, kind=config.kind)
        with self._children_lock:
            self._children.add(child)
        return child

    def _await_ready(self, child: _Child, timeout: float) -> None:
        try:
            if not child.conn.poll(timeout):
                raise ContracktError("An extraction worker did not start in time")
            msg = child.conn.recv()
        except (EOFError, OSError):
            raise ContracktError("An extraction worker failed to start") from None
        if not isinstance(msg, tuple) or msg[0] != "ready":
            detail = msg[2] if isinstance(msg, tuple) and len(msg) > 2 else msg
            raise ContracktError(f"An extraction worker failed to start: {detail}")
        network = str(msg[3]) if len(msg) > 3 else "unknown"
        if network != self.network:
            if network.startswith("unavailable"):
                log.warning("ocr children keep the host network (%s)", network)
            else:
                log.info("ocr children run without network (%s)", network)
            self.network = network

    def _kill(self, child: _Child) -> None:
        child.dead = True
        with contextlib.suppress(Exception):
            if child.proc.is_alive():
                child.proc.kill()
            child.proc.join(5)
        with contextlib.suppress(Exception):
            child.conn.close()
        with contextlib.suppress(Exception):
            child.proc.close()
        with self._children_lock:
            self._children.discard(child)

    def _replace(self, child: _Child) -> None:
        """Kill ``child`` and start a warm replacement in the background."""
        child.dead = True
        self.restarts += 1
        threading.Thread(target=self._replace_sync, args=(child,), name="ocr-respawn", daemon=True).start()

    def _replace_sync(self, child: _Child) -> None:
        self._kill(child)
        config = self._worker_cfg if child.kind == "worker" else self._inspect_cfg
        slots = self._work if child.kind == "worker" else self._insp
        delay = 0.5
        for _attempt in range(5):
            if self._closed:
                return
            fresh = self._spawn(config)
            try:
                self._await_ready(fresh, START_TIMEOUT_S)
            except ContracktError:
                log.warning("ocr child failed to start; retrying", exc_info=True)
                self._kill(fresh)
                time.sleep(delay)
                delay *= 2
                continue
            if self._closed:
                self._kill(fresh)
                return
            slots.release(fresh)
            return
        log.error("could not replace an ocr child after 5 attempts")

    @contextlib.asynccontextmanager
    async def _lease(self, slots: _Slots, timeout: float | None) -> AsyncIterator[_Child]:
        if not self._started:
            await self.start()
        try:
            child = await asyncio.wait_for(slots.acquire(), timeout)
        except TimeoutError:
            raise ExtractionTimeout("No extraction worker became free in time") from None
        try:
            yield child
        finally:
            if not child.dead:
                slots.release(child)

    async def _call(self, child: _Child, msg: tuple[Any, ...], timeout: float) -> Any:
        """Send one request and wait for its reply; kill the child on failure."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(self._exchange(loop, child, msg), timeout)
        except TimeoutError:
            self._replace(child)
            raise ExtractionTimeout("A page took too long to process") from None
        except _ChildDied:
            self._replace(child)
            raise ResourceLimit("The document exceeded a resource limit") from None
        except asyncio.CancelledError:
            # The child is still busy with a request nobody waits for.
            self._replace(child)
            raise

    async def _exchange(self, loop: asyncio.AbstractEventLoop, child: _Child, msg: tuple[Any, ...]) -> Any:
        try:
            await loop.run_in_executor(self._io, child.conn.send, msg)
        except (OSError, ValueError):
            raise _ChildDied() from None
        req_id = msg[1]
        while True:
            reply = await self._recv(loop, child)
            if isinstance(reply, tuple) and len(reply) >= 3 and reply[0] == req_id:
                return reply

    async def _recv(self, loop: asyncio.AbstractEventLoop, child: _Child) -> Any:
        fd = child.conn.fileno()
        fut: asyncio.Future[Any] = loop.create_future()

        def readable() -> None:
            loop.remove_reader(fd)
            if fut.done():
                return
            try:
                fut.set_result(child.conn.recv())
            except Exception:
                fut.set_exception(_ChildDied())

        loop.add_reader(fd, readable)
        try:
            return await fut
        finally:
            loop.remove_reader(fd)

    def _raise_child_error(self, child: _Child, code: str, message: str) -> None:
        if code == "encrypted_pdf":
            raise EncryptedPdf()
        if code == "corrupt_pdf":
            raise CorruptPdf()
        if code == "unknown_engine":
            raise UnknownEngine()
        if code == "resource_limit":
            self._replace(child)
            raise ResourceLimit()
        log.warning("ocr child reported %s: %s", code, message)
        raise ContracktError("The document could not be processed")

    # ------------------------------------------------------------------ the port

    async def inspect(self, pdf: bytes) -> DocumentInfo:
        if self._closed:
            raise ContracktError("The extraction pool is closed")
        async with self._lease(self._insp, None) as child:
            reply = await self._call(child, ("inspect", next(self._req_ids), pdf), self.inspect_timeout_s)
            if reply[1] != "ok":
                self._raise_child_error(child, reply[2], reply[3])
        info = DocumentInfo(
            pages=int(reply[2]["pages"]),
            encrypted=bool(reply[2]["encrypted"]),
            active_content=tuple(reply[2].get("active_content", ())),
        )
        if info.pages > self.max_pages:
            raise TooManyPages(f"The document has {info.pages} pages; the limit is {self.max_pages}")
        return info

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        engine = options.engine or self.engine
        if engine not in self.engines():
            raise UnknownEngine(f"Unknown OCR engine: {engine}")
        if options.mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
        deadline = time.monotonic() + self.job_timeout_s
        info = await self.inspect(pdf)
        total = info.pages
        if total == 0:
            return ExtractionResult(pages=[], engine=engine, active_content=list(info.active_content))
        job = _Job(
            doc_id=uuid.uuid4().hex,
            pdf=pdf,
            mode=options.mode,
            engine=engine,
            total=total,
            deadline=deadline,
            progress=progress,
        )
        lanes = [asyncio.create_task(self._lane(job)) for _ in range(min(self.workers, total))]
        try:
            outcomes = await asyncio.gather(*lanes, return_exceptions=True)
        except asyncio.CancelledError:
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            raise
        finally:
            self._forget_later(job)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if job.error is not None:
            raise job.error
        if errors:
            raise errors[0]
        pages = [Page.from_dict(d) for d in job.results if d is not None]
        if len(pages) != total:  # pragma: no cover - defensive
            raise ContracktError("Some pages were not processed")
        return ExtractionResult(pages=pages, engine=engine, active_content=list(info.active_content))

    async def _lane(self, job: _Job) -> None:
        while job.pending and job.error is None:
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                job.fail(ExtractionTimeout("The document took too long to process"))
                return
            try:
                async with self._lease(self._work, remaining) as child:
                    if not job.pending or job.error is not None:
                        return
                    index = job.pending.popleft()
                    page = await self._run_page(child, job, index)
            except ContracktError as exc:
                job.fail(exc)
                return
            job.results[index] = page
            job.done += 1
            if job.progress is not None:
                try:
                    await job.progress(job.done, job.total)
                except Exception as exc:
                    job.fail(exc)
                    raise

    async def _run_page(self, child: _Child, job: _Job, index: int) -> dict[str, Any]:
        timeout = min(self.page_timeout_s, max(0.0, job.deadline - time.monotonic()))
        for _attempt in range(2):
            cached = job.doc_id in child.docs
            drop_after = not job.pending
            req = {
                "doc_id": job.doc_id,
                "pdf": None if cached else job.pdf,
                "index": index,
                "mode": job.mode,
                "engine": job.engine,
                "drop_after": drop_after,
                "forget": sorted(child.forget),
            }
            forget = set(child.forget)
            reply = await self._call(child, ("page", next(self._req_ids), req), timeout)
            child.forget -= forget
            for doc_id in forget:
                child.docs.pop(doc_id, None)
            if reply[1] == "ok":
                if drop_after:
                    child.docs.pop(job.doc_id, None)
                else:
                    child.docs[job.doc_id] = None
                    child.docs.move_to_end(job.doc_id)
                    while len(child.docs) > 2:
                        child.docs.popitem(last=False)
                    job.children.add(child)
                payload: dict[str, Any] = reply[2]
                return payload
            if reply[2] == "doc_missing":
                child.docs.pop(job.doc_id, None)
                continue
            child.docs.pop(job.doc_id, None)
            self._raise_child_error(child, reply[2], reply[3])
        raise ContracktError("The document could not be processed")  # pragma: no cover

    def _forget_later(self, job: _Job) -> None:
        for child in job.children:
            if job.doc_id in child.docs:
                child.forget.add(job.doc_id)


@dataclass(eq=False)
class _Job:
    doc_id: str
    pdf: bytes
    mode: str
    engine: str
    total: int
    deadline: float
    progress: ProgressCallback | None
    pending: deque[int] = field(init=False)
    results: list[dict[str, Any] | None] = field(init=False)
    done: int = 0
    error: BaseException | None = None
    children: set[_Child] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.pending = deque(range(self.total))
        self.results = [None] * self.total

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
