"""``ProcessPoolExtractor``: the Extractor port over a zygote and short-lived, confined children.

Untrusted PDFs are parsed, rendered and OCR'd only in child processes that the
zygote (``zygote.py``) forks with the OCR models already loaded. A child lives
for one *slice* of one job: it confines itself (``sandbox.confine``: own uid,
resource limits, seccomp; no network, inherited from the zygote), receives the
document once, reads pages of it, and is killed when the slice ends. So no
child ever holds two documents, let alone two tenants' (docs/adr/0006).

Fair share of the cores: ``workers`` slots, handed out by ``FairSlots``
(``fair_slots.py``) to the waiting lane whose tenant holds the fewest slots (first
come first served among equals). A lane that has held its slot for ``slice_s`` seconds gives it back
after its current page whenever another tenant is waiting, so a 500-page scan
cannot keep a one-page document waiting for more than a slice.
A PDF's text layers need no OCR, so they need not wait for an OCR slot either: while
every OCR slot is taken, a PDF read in mode ``auto`` or ``text`` may take one of
``text_slots`` *text* slots instead (the same fair shares), whose child reads text layers
only; at the first page that needs OCR the job gives the text slot back and waits for an
OCR slot like any other. A born-digital document is then not slowed by another tenant's
scans, at the cost of ``text_slots`` more children (and a little CPU) per pool (ADR 0007).
The jobs, the lanes and the slots they take are ``lanes.py``; this module forks, feeds,
asks and kills the children.

Everything a child says is hostile input: frames with caps, a schema check of
each reply (``protocol.py``), never unpickling. A reply outside the protocol
kills the child and fails the job with ``sandbox_violation``; text over the
output caps fails it with ``output_limit``. Both are permanent.

The pool is loop-agnostic: the scheduler and the zygote's channel are guarded
by threading locks and waiters are woken with ``call_soon_threadsafe``, so one
pool serves several asyncio tasks and even several event loops. Pipe reads use
``loop.add_reader``; pipe writes (the PDF bytes) and zygote calls go through a
small thread pool (``zygote_client.py``: the zygote's channel). With a GPU
configured, children's model calls are answered in this process (``model_host.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from contrackt.adapters.ocr import sandbox
from contrackt.adapters.ocr.engines import DEFAULT_ENGINE, ENGINES, ModelMissing, available_engines, check_engine
from contrackt.adapters.ocr.fault_engines import FAULT_ENGINES, FAULT_ENV
from contrackt.adapters.ocr.lanes import Job, Lane, NeedsEngine, NeedsOcr, Slots
from contrackt.adapters.ocr.protocol import (
    DEFAULT_MAX_REPLY,
    FrameReader,
    OutputCaps,
    OutputExceeded,
    ProtocolViolation,
    check_error,
    check_opened,
    check_page,
    check_searchable,
    encode,
    searchable_cap,
    write_all,
)
from contrackt.adapters.ocr.worker_child import ChildConfig
from contrackt.adapters.ocr.zygote_client import ZygoteClient, ZygoteGone
from contrackt.domain.errors import (
    ContracktError,
    CorruptImage,
    CorruptPdf,
    EncryptedPdf,
    ExtractionTimeout,
    ImageTooLarge,
    InvalidRequest,
    OutputLimit,
    ResourceLimit,
    SandboxViolation,
    TooManyPages,
    UnknownEngine,
)
from contrackt.domain.results import ExtractionResult, Page
from contrackt.metrics import (
    OCR_CHILD_RESTARTS,
    OCR_CHILDREN_SPAWNED,
    OCR_DEVICE,
    OCR_SANDBOX_VIOLATIONS,
    observe_child_rss,
)
from contrackt.ports.extractor import DocumentInfo, ExtractOptions, ProgressCallback

if TYPE_CHECKING:  # numpy and the batching code are imported only when a device is asked for
    from contrackt.adapters.ocr.model_host import DeviceHost, PageBudget

log = logging.getLogger(__name__)

MODES = ("auto", "ocr", "text")
DEVICES = ("cpu", "cuda", "auto")  # where the default engine's models run (model_host.py)
PRECISIONS = ("fp32", "tf32", "fp16")
REREADS = ("fax", "all", "off")  # where an engine's unsure lines are read again (worker_child.py)
START_TIMEOUT_S = 180.0
# A spawn may load an engine the first time a request names it.
SPAWN_TIMEOUT_S = 180.0
READY_TIMEOUT_S = 15.0
SLICE_S = 3.0


class _ChildDied(Exception):
    """The child's pipe closed: it crashed, was killed by its limits, or exited."""


# ----------------------------------------------------------------------------- children


@dataclass(eq=False)
class _Child:
    pid: int
    uid: int | None
    to_fd: int
    from_fd: int
    pidfd: int
    reader: FrameReader
    ids: Any = field(default_factory=lambda: itertools.count(1))
    frames: deque[tuple[dict[str, Any], bytes]] = field(default_factory=deque)
    dead: bool = False
    # forked before the zygote had the job's engine: may answer needs_engine
    without_engine: bool = False


# ----------------------------------------------------------------------------- the pool


class ProcessPoolExtractor:
    """Extractor over ``workers`` slots of forked, confined, one-document children."""

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
        max_image_pixels: int = 50_000_000,
        orientation: bool = True,
        fault_engines: bool | None = None,
        model_dirs: dict[str, str] | None = None,
        postcorrect: bool = True,
        latin: bool = True,
        rec_min_width: int = 0,
        adaptive_scale: bool = True,
        fax_cleanup: bool = True,
        line_reread: str = "fax",
        network_isolation: str = "auto",
        sandbox_uid: str = "auto",
        seccomp: str = "auto",
        caps: OutputCaps | None = None,
        slice_s: float = SLICE_S,
        max_reply_bytes: int = DEFAULT_MAX_REPLY,
        production: bool = False,
        preload: bool = True,
        device: str = "cpu",
        device_precision: str = "fp16",
        device_host: DeviceHost | None = None,
        text_slots: int = 1,
    ) -> None:
        """``engine`` is the deployment's default: with ``preload`` the zygote loads and
        self-tests it before ``start`` returns (workers), without it only when a page first
        needs OCR (``contrackt extract``: a text-layer PDF never waits for a model).
        ``engines`` are the others a request may ask for (default: every installed one),
        each loaded by the zygote on first use. ``zoom`` overrides every engine's render
        policy (tests, benchmarks); ``adaptive_scale`` picks each scanned page's zoom from its
        native resolution and text height (``resolution.py``), off: the engine's zoom;
        ``fax_cleanup`` whitens streaks and specks on fax pages before OCR (``cleanup.py``);
        ``line_reread`` (fax | all | off) has an engine's unsure lines read again by a stronger
        recogniser (``EngineSpec.reread_with``: the fast profile's by the default engine's) on fax
        pages, or on every page where they are a large share of its lines.
        ``device`` (cpu | cuda | auto) runs the default engine's models on this process's GPU
        for every child (``model_host.py``), opened at ``start``; without a usable one the
        children read on their CPUs and ``device_status`` says why. ``device_host`` gives
        one ready-made (tests: ONNX Runtime standing in for the device). ``text_slots``
        children may read PDFs' text layers while every OCR slot is taken (0: none)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if text_slots < 0:
            raise ValueError("text_slots must be 0 or more")
        if network_isolation not in sandbox.NETWORK_MODES:
            raise ValueError(f"network_isolation must be one of {', '.join(sandbox.NETWORK_MODES)}")
        if seccomp not in sandbox.SECCOMP_MODES:
            raise ValueError(f"seccomp must be one of {', '.join(sandbox.SECCOMP_MODES)}")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}")
        if line_reread not in REREADS:
            raise ValueError(f"line_reread must be one of {', '.join(REREADS)}")
        if device_precision not in PRECISIONS:
            raise ValueError(f"device_precision must be one of {', '.join(PRECISIONS)}")
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
        self.caps = caps or OutputCaps()
        self.slice_s = slice_s
        self.max_reply_bytes = max_reply_bytes
        self.network_isolation = network_isolation
        self.seccomp_mode = seccomp
        self.production = production
        self.uid_base = sandbox.resolve_uid_base(sandbox_uid)
        self.device = device
        self.device_precision = device_precision
        self._host = device_host
        self._device_why = "" if device_host is not None else "not started"
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
        self._config = ChildConfig(
            kind="worker",
            engine=engine,
            extra_engines=tuple(enabled),
            zoom=zoom,
            max_pixels=max_pixels,
            fault_engines=self.fault_engines,
            orientation=orientation,
            model_dirs=tuple(sorted(self.model_dirs.items())),
            postcorrect=postcorrect,
            latin=latin,
            rec_min_width=rec_min_width,
            adaptive_scale=adaptive_scale,
            fax_cleanup=fax_cleanup,
            line_reread=line_reread,
            max_page_chars=self.caps.max_page_chars,
            max_lines_per_page=self.caps.max_lines_per_page,
            max_image_pixels=max_image_pixels,
            max_frames=max_pages,
            preload=preload,
        )
        self._confinement = sandbox.Confinement(
            memory_limit_mb=memory_limit_mb, uid_base=self.uid_base, seccomp=seccomp
        )
        self._slots = Slots(workers, text_slots)
        self._zygote: ZygoteClient | None = None
        self._zygote_lock = threading.Lock()
        self._live: set[_Child] = set()
        self._live_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._io = ThreadPoolExecutor(max_workers=2 * workers + 4, thread_name_prefix="ocr-pipe")
        # observability: what the zygote reported, children started and lost, their peak memory
        self.network: str | None = None
        self.seccomp: str | None = None
        self.spawned = 0
        self.engines_loaded: list[str] = []  # what the zygote held at the last fork
        self.restarts = 0  # children lost to a crash, a limit, a timeout or a violation
        self.violations = 0  # children that broke the protocol (each also a restart)
        self.peak_child_rss_kb = 0

    # ------------------------------------------------------------------ lifecycle

    def engines(self) -> list[str]:
        names = list(self._enabled)
        if self.fault_engines:
            names += list(FAULT_ENGINES)
        return names

    def self_test(self) -> None:
        """Fail loudly (``ContracktError`` naming the file) if an enabled engine's
        package or model is missing. Cheap: looks at the disk, loads nothing; the
        zygote then loads the default engine and runs it once before ``ready``."""
        for name in self._enabled:
            try:
                check_engine(name, self.model_dirs.get(name))
            except ModelMissing as exc:
                raise ContracktError(f"OCR self-test failed: {exc}") from None

    def sandbox_status(self) -> dict[str, str]:
        """How the children are confined (for logs, health and tests)."""
        uid = "own uid per child" if self.uid_base is not None else "the worker's uid"
        return {"network": str(self.network), "seccomp": str(self.seccomp), "identity": uid}

    def child_pids(self) -> list[int]:
        """Process ids of the children alive now."""
        with self._live_lock:
            return [c.pid for c in self._live if not c.dead]

    def device_status(self) -> dict[str, str]:
        """Where the default engine's models run: ``cuda`` (the worker's GPU, for every child) or
        ``cpu`` (each child's own), and why not the GPU when one was asked for."""
        if self._host is not None:
            return {"device": self._host.device, "engine": self._host.engine, "precision": self.device_precision}
        return {"device": "cpu", "why": self._device_why}

    def zygote_pid(self) -> int | None:
        return self._zygote.proc.pid if self._zygote is not None else None

    async def start(self) -> None:
        if self._started:
            return
        await asyncio.get_running_loop().run_in_executor(self._io, self._start_sync)

    def _start_sync(self) -> None:
        with self._zygote_lock:
            if self._started:
                return
            if self._closed:
                raise ContracktError("The extraction pool is closed")
            self.self_test()
            self._open_device()
            if self.uid_base is None:
                # Children share this process's uid: make its /proc/<pid>/{environ,mem} root's,
                # so a child cannot read the worker's secrets there.
                sandbox.prctl(sandbox.PR_SET_DUMPABLE, 0)
            self._zygote = self._start_zygote()
            self._started = True

    def _open_device(self) -> None:
        """The device host (before the zygote: its children must know to use it)."""
        if self._host is None and self.device != "cpu":
            from contrackt.adapters.ocr.model_host import open_host

            self._host, self._device_why = open_host(
                self.device,
                self.engine,
                self.device_precision,
                self._config.latin,
                self.model_dirs.get(self.engine),
            )
            if self._host is None:
                # asked for a GPU and not getting one is an operator's business; "auto" is not
                level = logging.WARNING if self.device == "cuda" else logging.INFO
                log.log(level, "ocr.device.cpu: %s; OCR reads on the CPU", self._device_why)
        elif self._host is None:
            self._device_why = "CONTRACKT_OCR_DEVICE is cpu"
        if self._host is not None:
            self._config = replace(self._config, remote_models=(self._host.engine,))
            log.info("ocr.device: %s (%s, %s)", self._host.device, self._host.engine, self.device_precision)
        device = "cpu" if self._host is None else self._host.device
        for name in ("cpu", "cuda"):
            OCR_DEVICE.labels(device=name).set(1 if name == device else 0)

    def _start_zygote(self) -> ZygoteClient:
        request = {
            "op": "config",
            "config": asdict(self._config),
            "confinement": asdict(self._confinement),
            "network": self.network_isolation,
        }
        zygote = ZygoteClient.start(request, START_TIMEOUT_S)
        network, seccomp = str(zygote.info.get("network")), str(zygote.info.get("seccomp"))
        if self.production:
            self._check_production(zygote, network, seccomp)
        if network != self.network or seccomp != self.seccomp:
            level = logging.WARNING if network.startswith("unavailable") or seccomp.startswith("unavailable") else 20
            log.log(
                level, "ocr sandbox: network %s, seccomp %s, %s", network, seccomp, self.sandbox_status()["identity"]
            )
            self.network, self.seccomp = network, seccomp
        return zygote

    def _check_production(self, zygote: ZygoteClient, network: str, seccomp: str) -> None:
        """Production: OCR children without network (their own namespace, or seccomp refusing
        sockets), unless the operator opted out explicitly; the opt-out is logged at each start."""
        if self.network_isolation == "off":
            log.warning(
                "ocr.sandbox.network_opt_out: CONTRACKT_OCR_NETWORK_ISOLATION=off; OCR children "
                "keep the worker's network unless seccomp refuses sockets (seccomp: %s)",
                seccomp,
            )
            return
        if network.startswith("unavailable") and seccomp != "available":
            zygote.stop()
            raise ContracktError(
                "production mode needs OCR children without network, but neither a network "
                f"namespace ({network}) nor seccomp ({seccomp}) is available here; grant one "
                "(see docs/adr/0006-ocr-sandbox.md) or opt out with CONTRACKT_OCR_NETWORK_ISOLATION=off"
            )

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._closed = True
        self._slots.close()
        with self._live_lock:
            children = list(self._live)
        for child in children:
            self._kill(child)
        with self._zygote_lock:
            if self._zygote is not None:
                self._zygote.stop()
                self._zygote = None
        if self._host is not None:
            self._host.close()
        self._io.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ children

    def _spawn_sync(self, engine: str | None, lazy: bool = False, images: bool = False) -> _Child:
        for attempt in range(2):
            with self._zygote_lock:
                if self._closed:
                    raise ContracktError("The extraction pool is closed")
                if self._zygote is None or not self._zygote.alive():
                    if self._zygote is not None:
                        log.warning("ocr zygote died; starting a new one")
                        with contextlib.suppress(Exception):
                            self._zygote.stop()
                    self._zygote = self._start_zygote()
                zygote = self._zygote
            try:
                reply, fds = zygote.spawn(engine, SPAWN_TIMEOUT_S, lazy, images)
            except ZygoteGone:
                if attempt:
                    raise ContracktError("The OCR zygote stopped answering") from None
                with self._zygote_lock:
                    if self._zygote is zygote:
                        with contextlib.suppress(Exception):
                            zygote.proc.kill()
                continue
            os.set_blocking(fds[1], False)
            uid = reply.get("uid")
            child = _Child(
                pid=int(reply["pid"]),
                uid=int(uid) if uid is not None else None,
                to_fd=fds[0],
                from_fd=fds[1],
                pidfd=fds[2] if len(fds) > 2 else -1,
                reader=FrameReader(self.max_reply_bytes),
            )
            loaded = reply.get("loaded")
            child.without_engine = lazy and not (isinstance(loaded, list) and engine in loaded)
            with self._live_lock:
                self._live.add(child)
                self.spawned += 1
                if isinstance(loaded, list):
                    self.engines_loaded = [str(name) for name in loaded]
            OCR_CHILDREN_SPAWNED.inc()
            return child
        raise ContracktError("The OCR zygote could not start a child")  # pragma: no cover

    async def _spawn(self, engine: str | None, lazy: bool = False, images: bool = False) -> _Child:
        loop = asyncio.get_running_loop()
        forking = self._io.submit(self._spawn_sync, engine, lazy, images)
        try:
            child = await asyncio.shield(asyncio.wrap_future(forking))
        except asyncio.CancelledError:
            # The fork goes on in its thread: end the child as soon as it exists. A callback on
            # the thread's future runs even if this event loop is closed by then.
            forking.add_done_callback(self._kill_spawned)
            raise
        try:
            header, _ = await self._recv(loop, child, READY_TIMEOUT_S)
        except (_ChildDied, TimeoutError, ProtocolViolation):
            self._kill(child)
            raise ContracktError("An extraction worker failed to start") from None
        except BaseException:
            self._kill(child)
            raise
        if header.get("op") != "ready" or (self.seccomp_mode == "required" and header.get("seccomp") != "on"):
            self._kill(child)
            raise ContracktError("An extraction worker did not confine itself")
        return child

    def _kill_spawned(self, forking: concurrent.futures.Future[_Child]) -> None:
        if not forking.cancelled() and forking.exception() is None:
            self._kill(forking.result())

    def _kill(self, child: _Child) -> None:
        if child.dead:
            return
        child.dead = True
        rss_kb = _peak_rss_kb(child.pid)
        self.peak_child_rss_kb = max(self.peak_child_rss_kb, rss_kb)
        observe_child_rss(rss_kb)
        try:
            if child.pidfd >= 0:
                signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
            else:
                os.kill(child.pid, signal.SIGKILL)
        except OSError:
            pass
        for fd in (child.to_fd, child.from_fd, child.pidfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        with self._live_lock:
            self._live.discard(child)

    def _lost(self, child: _Child) -> None:
        """A child that died or misbehaved: count it and make sure it is gone."""
        if not child.dead:
            self.restarts += 1
            OCR_CHILD_RESTARTS.inc()
        self._kill(child)

    def _count_violation(self) -> None:
        self.violations += 1
        OCR_SANDBOX_VIOLATIONS.inc()

    def _violation(self, child: _Child) -> SandboxViolation:
        """A child broke the protocol: count it, make sure it is gone, and say so to the job."""
        self._count_violation()
        self._lost(child)
        return SandboxViolation()

    # ------------------------------------------------------------------ the wire

    async def _recv(
        self, loop: asyncio.AbstractEventLoop, child: _Child, timeout: float
    ) -> tuple[dict[str, Any], bytes]:
        if child.frames:
            return child.frames.popleft()
        fut: asyncio.Future[None] = loop.create_future()
        fd = child.from_fd

        def readable() -> None:
            if fut.done():
                return
            try:
                frames = child.reader.read_from(fd)
            except BlockingIOError:
                return
            except OSError:
                fut.set_exception(_ChildDied())
                return
            except ProtocolViolation as exc:
                fut.set_exception(exc)
                return
            if frames is None:
                fut.set_exception(_ChildDied())
                return
            child.frames.extend(frames)
            if child.frames:
                fut.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            loop.remove_reader(fd)
        return child.frames.popleft()

    async def _call(self, child: _Child, header: dict[str, Any], timeout: float, blob: bytes = b"") -> dict[str, Any]:
        """Send one request and return its (framed, id-checked) reply; kill the child on failure."""
        reply, _ = await self._exchange(child, header, timeout, blob)
        return reply

    async def _exchange(
        self,
        child: _Child,
        header: dict[str, Any],
        timeout: float,
        blob: bytes = b"",
        *,
        reply_blob: int = 0,
        device: PageBudget | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """``_call`` whose reply may carry a blob of up to ``reply_blob`` bytes (refused unread
        beyond); only the searchable-PDF request allows one. With ``device`` (a page request
        while the device host serves), the child's ``model`` requests are answered, within that
        budget, until its reply comes."""
        loop = asyncio.get_running_loop()
        req_id = next(child.ids)
        header = {**header, "id": req_id}
        host = self._host if device is not None else None
        child.reader.max_blob = max(reply_blob, host.limits.max_request_bytes if host is not None else 0)

        async def send(head: dict[str, Any], data: bytes) -> None:
            try:
                await loop.run_in_executor(self._io, _send_frame, child.to_fd, head, data)
            except OSError:
                raise _ChildDied() from None

        async def exchange() -> tuple[dict[str, Any], bytes]:
            await send(header, blob)
            reply, extra = await self._recv(loop, child, timeout)
            while host is not None and device is not None and reply.get("op") == "model" and not child.frames:
                answer, out = await host.answer(reply, extra, device)
                await send(answer, out)
                reply, extra = await self._recv(loop, child, timeout)
            if (extra and not reply_blob) or reply.get("id") != req_id or child.frames:
                raise ProtocolViolation("unexpected reply")
            return reply, extra

        try:
            return await asyncio.wait_for(exchange(), timeout)
        except TimeoutError:
            self._lost(child)
            raise ExtractionTimeout("A page took too long to process") from None
        except _ChildDied:
            self._lost(child)
            raise ResourceLimit("The document exceeded a resource limit") from None
        except ProtocolViolation as exc:
            log.warning("ocr child broke the protocol: %s", str(exc)[:200])
            raise self._violation(child) from None
        except BaseException:
            # Cancelled: the child is still busy with a request nobody waits for.
            self._kill(child)
            raise
        finally:
            child.reader.max_blob = 0

    def _error(self, child: _Child, reply: dict[str, Any]) -> ContracktError:
        try:
            code, message = check_error(reply)
        except ProtocolViolation:
            return self._violation(child)
        if code == "encrypted_pdf":
            return EncryptedPdf()
        if code == "corrupt_pdf":
            return CorruptPdf()
        if code == "corrupt_image":
            return CorruptImage()
        if code == "image_too_large":
            return ImageTooLarge(f"An image frame has more than {self._config.max_image_pixels} pixels")
        if code == "too_many_pages":
            return TooManyPages(f"The document has more than {self.max_pages} pages")
        if code == "unknown_engine":
            return UnknownEngine()
        if code == "output_limit":
            return OutputLimit()
        if code == "resource_limit":
            self._lost(child)
            return ResourceLimit()
        log.warning("ocr child reported %s: %s", code, message)
        return ContracktError("The document could not be processed")

    async def _open(
        self, child: _Child, pdf: bytes, timeout: float, media_type: str = "application/pdf"
    ) -> DocumentInfo:
        reply = await self._call(child, {"op": "open", "media_type": media_type}, timeout, pdf)
        if reply.get("op") == "error":
            raise self._error(child, reply)
        if reply.get("op") != "opened":
            raise self._violation(child)
        try:
            pages, encrypted, found = check_opened(reply, self.max_pages)
        except ProtocolViolation:
            raise self._violation(child) from None
        return DocumentInfo(pages=pages, encrypted=encrypted, active_content=found)

    async def _page(self, child: _Child, job: Job, index: int, text: bool = False) -> dict[str, Any]:
        """Page ``index`` read by ``child``; ``text``: the child holds a text slot and reads
        text layers only (a page without one: ``NeedsOcr``)."""
        timeout = min(self.page_timeout_s, max(0.0, job.deadline - time.monotonic()))
        mode = "layer" if text and job.mode == "auto" else job.mode
        request = {"op": "page", "index": index, "mode": mode, "engine": job.engine}
        budget = None
        if self._host is not None:
            from contrackt.adapters.ocr.model_host import PageBudget

            budget = PageBudget(self._host.limits)
        reply, _ = await self._exchange(child, request, timeout, device=budget)
        if reply.get("op") == "error":
            if reply.get("code") == "needs_engine" and child.without_engine:
                raise NeedsEngine
            if reply.get("code") == "needs_ocr" and mode == "layer":
                raise NeedsOcr
            raise self._error(child, reply)
        if reply.get("op") != "page" or set(reply) != {"op", "id", "page"}:
            raise self._violation(child)
        try:
            return check_page(reply["page"], index, self.caps)
        except ProtocolViolation:
            raise self._violation(child) from None
        except OutputExceeded as exc:
            self._kill(child)
            raise OutputLimit(str(exc)) from None

    # ------------------------------------------------------------------ the port

    async def inspect(self, pdf: bytes) -> DocumentInfo:
        if self._closed:
            raise ContracktError("The extraction pool is closed")
        if not self._started:
            await self.start()
        job = self._job(pdf, ExtractOptions(mode="text"), None)
        lane = Lane(self, job)
        try:
            info = await lane.begin()
        finally:
            lane.end()
        assert info is not None  # a job that has not begun has pages to read
        if info.pages > self.max_pages:
            raise TooManyPages(f"The document has {info.pages} pages; the limit is {self.max_pages}")
        return info

    def _job(self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None) -> Job:
        return Job(
            key=options.tenant_id or uuid.uuid4().hex,
            pdf=pdf,
            mode=options.mode,
            engine=options.engine or self.engine,
            deadline=time.monotonic() + self.job_timeout_s,
            progress=progress,
            caps=self.caps,
            media_type=options.media_type,
            selection=options.pages,
            lazy=options.mode == "auto" and options.media_type == "application/pdf",
            light=options.mode in ("auto", "text") and options.media_type == "application/pdf",
        )

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        engine = options.engine or self.engine
        if engine not in self.engines():
            raise UnknownEngine(f"Unknown OCR engine: {engine}")
        if options.mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
        if self._closed:
            raise ContracktError("The extraction pool is closed")
        if not self._started:
            await self.start()
        job = self._job(pdf, options, progress)
        first = Lane(self, job)
        try:
            info = await first.begin()
        except BaseException:
            first.end()
            raise
        assert info is not None  # a job that has not begun has pages to read
        if info.pages > self.max_pages:
            first.end()
            raise TooManyPages(f"The document has {info.pages} pages; the limit is {self.max_pages}")
        try:
            job.begin(info.pages)
        except ContracktError:
            first.end()
            raise
        if job.total == 0:
            first.end()
            return ExtractionResult(pages=[], engine=engine, active_content=list(info.active_content))
        lanes = [first, *(Lane(self, job) for _ in range(min(self.workers, job.total) - 1))]
        tasks = {asyncio.create_task(lane.run()) for lane in lanes}
        try:
            while tasks:
                _, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if job.error is not None:
                    break  # stop the other lanes now: their children are killed
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for lane in lanes:
                lane.end()
        if job.error is not None:
            raise job.error
        done = [d for d in job.results if d is not None]
        if len(done) != job.total:  # pragma: no cover - defensive
            raise ContracktError("Some pages were not processed")
        searchable = await self._searchable(job, done) if options.searchable_pdf else None
        pages = [Page.from_dict(d) for d in done]
        return ExtractionResult(
            pages=pages, engine=engine, active_content=list(info.active_content), searchable_pdf=searchable
        )

    async def _searchable(self, job: Job, pages: list[dict[str, Any]]) -> bytes | None:
        """The searchable PDF, built by a fresh child that opens the document once more and gets
        the validated pages; None when it could not be built (too large, too slow, a child
        error): the text result stands without it. A reply outside the protocol still fails
        the job (``sandbox_violation``)."""
        untouched = job.media_type == "application/pdf" and job.selection is None
        if untouched and all(p["source"] == "text_layer" for p in pages):
            return job.pdf  # nothing to add: the document is its own searchable PDF
        payload = [
            {"number": p["number"], "source": p["source"], "rotation": p["rotation"], "lines": p["lines"]}
            for p in pages
        ]
        cap = searchable_cap(len(job.pdf), pages)
        remaining = job.deadline - time.monotonic()
        if remaining <= 0:
            return None
        # a document read from text layers only builds it in a text slot when the OCR slots are taken
        held = await self._slots.take(job, remaining)
        if held is None:
            return None
        child: _Child | None = None
        try:
            child = await self._spawn(None, images=job.media_type != "application/pdf")
            timeout = max(0.1, min(self.page_timeout_s, job.deadline - time.monotonic()))
            await self._open(child, job.pdf, timeout, job.media_type)
            request = {"op": "searchable", "pages": payload, "cap": cap}
            reply, blob = await self._exchange(child, request, timeout, reply_blob=cap)
            if reply.get("op") == "error":
                code, message = check_error(reply)
                log.warning("ocr.searchable.failed: %s %s", code, message[:100])
                return None
            if reply.get("op") != "searchable":
                raise ProtocolViolation("unexpected reply")
            return check_searchable(reply, blob)
        except ProtocolViolation:
            raise SandboxViolation() from None
        except SandboxViolation:
            raise
        except ContracktError as exc:  # too slow, a limit, the child or the zygote failed
            log.warning("ocr.searchable.failed: %s", exc.code)
            return None
        finally:
            if child is not None:
                self._kill(child)
            held.release(job.key)


def _send_frame(fd: int, header: dict[str, Any], blob: bytes) -> None:
    """Write a frame without copying a large blob into it."""
    head = encode(header)
    if not blob:
        write_all(fd, head)
        return
    write_all(fd, head[:-4] + len(blob).to_bytes(4, "big"))
    write_all(fd, blob)


def _peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
