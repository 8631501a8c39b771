"""Jobs and lanes: how one document's pages are shared out among the OCR pool's slots.

A ``Job`` is one document being read: the pages still to read, the results so far, and the
caps on what it may return. A ``Lane`` is one slot's worth of work on a job: it takes a slot
(``Slots``: the pool's OCR slots and its text slots, each a ``FairSlots``), has a child
forked, gives it the document, and asks it for pages one at a time until the job is done,
its slice is over while another tenant waits, or a page needs what the child cannot do (an
engine it was forked without, OCR in a text slot); then the child is killed and the lane
takes a slot again. Several lanes work on one job at once (``pool.py``: ``extract``).

A lane knows its pool only through ``LaneHost``: the slots, two timings, and the five
operations on children that ``pool.py`` carries out (fork, open, page, kill, count a
violation). What a child says, and how it is confined, is the pool's business.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from contrackt.adapters.ocr.fair_slots import FairSlots, acquire_first
from contrackt.adapters.ocr.protocol import OutputCaps
from contrackt.domain.errors import ContracktError, ExtractionTimeout, OutputLimit, PagesOutOfRange, SandboxViolation
from contrackt.metrics import PAGE_SECONDS
from contrackt.ports.extractor import DocumentInfo, ProgressCallback

if TYPE_CHECKING:
    from contrackt.adapters.ocr.pool import _Child

__all__ = ["Job", "Lane", "LaneHost", "NeedsEngine", "NeedsOcr", "Slots"]


class NeedsEngine(Exception):
    """A child forked before its engine was loaded met a page that needs OCR."""


class NeedsOcr(Exception):
    """A text lane's child met a page without a usable text layer."""


@dataclass(eq=False)
class Job:
    key: str
    pdf: bytes  # the document (a PDF or an image)
    mode: str
    engine: str
    deadline: float
    progress: ProgressCallback | None
    caps: OutputCaps
    media_type: str = "application/pdf"
    selection: tuple[int, ...] | None = None  # 1-based page numbers asked for (None: all)
    pages: int = 0  # the document's page count
    total: int = 0  # pages to read
    pending: deque[int] = field(default_factory=deque)
    slots: dict[int, int] = field(default_factory=dict)  # page index -> position in results
    results: list[dict[str, Any] | None] = field(default_factory=list)
    done: int = 0
    chars: int = 0
    lines: int = 0
    error: BaseException | None = None
    # fork children without waiting for the engine (a PDF's text-layer pages need none);
    # cleared the first time a page needs OCR
    lazy: bool = False
    # a lane may take a text slot while the OCR slots are taken (a PDF in mode auto or
    # text); cleared the first time a page needs OCR
    light: bool = False

    def begin(self, pages: int) -> None:
        """Plan the pages to read once the document's page count is known."""
        indices = list(range(pages)) if self.selection is None else sorted({n - 1 for n in self.selection})
        beyond = [i + 1 for i in indices if not 0 <= i < pages]
        if beyond:
            raise PagesOutOfRange(
                f"The document has {pages} page{'s' if pages != 1 else ''}; the selection asks for page {beyond[0]}"
            )
        self.pages = pages
        self.total = len(indices)
        self.pending = deque(indices)
        self.slots = {index: position for position, index in enumerate(indices)}
        self.results = [None] * len(indices)

    def record(self, index: int, page: dict[str, Any]) -> None:
        self.chars += len(page["text"])
        self.lines += len(page["lines"])
        if self.chars > self.caps.max_text_chars:
            raise OutputLimit(f"The document's text is over {self.caps.max_text_chars} characters")
        if self.lines > self.caps.max_lines:
            raise OutputLimit(f"The document has more than {self.caps.max_lines} lines")
        self.results[self.slots[index]] = page
        self.done += 1

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc

    @property
    def spawn_engine(self) -> str | None:
        return None if self.mode == "text" else self.engine


class Slots:
    """The pool's ``workers`` OCR slots and its ``text_slots`` text slots (0: none)."""

    def __init__(self, workers: int, text_slots: int) -> None:
        self.ocr = FairSlots(workers)
        self.text = FairSlots(text_slots) if text_slots else None

    async def take(self, job: Job, timeout: float) -> FairSlots | None:
        """An OCR slot; for a job whose pages may be text layers, a free OCR slot or else
        whichever frees first of an OCR slot and a text slot. None: none within ``timeout``."""
        if not job.light or self.text is None:
            try:
                await asyncio.wait_for(self.ocr.acquire(job.key), timeout)
            except TimeoutError:
                return None
            return self.ocr
        if self.ocr.try_acquire(job.key):
            return self.ocr
        return await acquire_first(job.key, timeout, self.ocr, self.text)

    def close(self) -> None:
        self.ocr.close()
        if self.text is not None:
            self.text.close()


class LaneHost(Protocol):
    """What a lane asks of its pool (``ProcessPoolExtractor``): its slots, and its children."""

    slice_s: float
    inspect_timeout_s: float

    @property
    def _slots(self) -> Slots: ...

    async def _spawn(self, engine: str | None, lazy: bool = False, images: bool = False) -> _Child: ...

    async def _open(
        self, child: _Child, pdf: bytes, timeout: float, media_type: str = "application/pdf"
    ) -> DocumentInfo: ...

    async def _page(self, child: _Child, job: Job, index: int, text: bool = False) -> dict[str, Any]: ...

    def _kill(self, child: _Child) -> None: ...

    def _count_violation(self) -> None: ...


class Lane:
    """One slot's worth of work on a job: a child per slice, pages one at a time."""

    def __init__(self, pool: LaneHost, job: Job) -> None:
        self.pool = pool
        self.job = job
        self.child: _Child | None = None
        self.held: FairSlots | None = None  # the scheduler whose slot this lane holds
        self.text = False  # the slot is a text slot: text layers only
        self.since = 0.0

    async def begin(self) -> DocumentInfo | None:
        """Take a slot, fork a child, give it the document; what the child found in it
        (None: the other lanes finished the job while this one waited for its slot)."""
        pool, job = self.pool, self.job
        remaining = job.deadline - time.monotonic()
        if remaining <= 0:
            raise ExtractionTimeout("The document took too long to process")
        self.held = await pool._slots.take(job, remaining)
        if self.held is None:
            raise ExtractionTimeout("No extraction worker became free in time")
        self.text = self.held is pool._slots.text
        if self.text and not job.light:  # the job met a scanned page while this lane waited
            self.end()
            return await self.begin()
        self.since = time.monotonic()
        if job.total and (not job.pending or job.error is not None):
            self.end()
            return None
        try:
            engine = None if self.text else job.spawn_engine
            self.child = await pool._spawn(engine, job.lazy, job.media_type != "application/pdf")
            timeout = max(0.1, min(pool.inspect_timeout_s, job.deadline - time.monotonic()))
            return await pool._open(self.child, job.pdf, timeout, job.media_type)
        except BaseException:
            self.end()
            raise

    def end(self) -> None:
        if self.child is not None:
            self.pool._kill(self.child)
            self.child = None
        if self.held is not None:
            held, self.held = self.held, None
            held.release(self.job.key)

    async def run(self) -> None:
        pool, job = self.pool, self.job
        try:
            while job.pending and job.error is None:
                if self.child is None:
                    info = await self.begin()
                    if info is None:
                        break
                    if info.pages != job.pages:
                        pool._count_violation()
                        raise SandboxViolation("A child saw another page count")
                    continue
                index = job.pending.popleft()
                started = time.monotonic()
                try:
                    page = await pool._page(self.child, job, index, self.text)
                except NeedsEngine:
                    # this child was forked before the engine was loaded: the next one has it
                    job.lazy = False
                    job.pending.appendleft(index)
                    self.end()
                    continue
                except NeedsOcr:
                    # a scanned page: the rest of the job waits for OCR slots
                    job.light = False
                    job.pending.appendleft(index)
                    self.end()
                    continue
                PAGE_SECONDS.labels(page["source"]).observe(time.monotonic() - started)
                job.record(index, page)
                if job.progress is not None:
                    await job.progress(job.done, job.total)
                held = self.held
                if time.monotonic() - self.since >= pool.slice_s and held is not None and held.contended(job.key):
                    self.end()  # someone else's turn; this job waits for a slot again
        except ContracktError as exc:
            job.fail(exc)
        except Exception as exc:  # the progress callback failed (e.g. the database)
            job.fail(exc)
        finally:
            self.end()
