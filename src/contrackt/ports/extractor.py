"""Port: turning PDF bytes into text (sandboxed child processes behind it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from contrackt.domain.results import ExtractionResult

# Called after each page: (pages_done, pages_total).
ProgressCallback = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class ExtractOptions:
    engine: str | None = None  # None: the deployment's default engine
    mode: str = "auto"  # auto | ocr | text
    # whose document: the pool shares its cores fairly between tenants (None: this job alone)
    tenant_id: str | None = None
    media_type: str = "application/pdf"  # application/pdf | image/jpeg | image/png | image/tiff
    pages: tuple[int, ...] | None = None  # 1-based page numbers to read (None: every page)
    searchable_pdf: bool = False  # also build the searchable PDF (ExtractionResult.searchable_pdf)


@dataclass(frozen=True)
class DocumentInfo:
    pages: int
    encrypted: bool
    active_content: tuple[str, ...] = ()  # javascript | launch_action | embedded_files (never run)


class Extractor(Protocol):
    """Raises domain errors: EncryptedPdf, CorruptPdf, CorruptImage, ImageTooLarge, TooManyPages,
    PagesOutOfRange, ResourceLimit, ExtractionTimeout, UnknownEngine, OutputLimit, SandboxViolation."""

    async def start(self) -> None:
        """Start the sandbox (models loaded before the first job)."""
        ...

    async def inspect(self, pdf: bytes) -> DocumentInfo:
        """Open the document in a sandboxed child with a short time limit."""
        ...

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult: ...

    def engines(self) -> list[str]: ...

    async def close(self) -> None: ...
