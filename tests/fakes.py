"""Test doubles: an in-process extractor with fault injection (crash, hang, permanent errors)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from contrackt.domain.errors import CorruptPdf, EncryptedPdf, ResourceLimit
from contrackt.domain.jobs import JobMessage
from contrackt.domain.results import ExtractionResult, Line, Page
from contrackt.domain.webhooks import SendOutcome
from contrackt.ports.extractor import DocumentInfo, ExtractOptions, ProgressCallback


class FakeExtractor:
    """Reads the text after a ``%TEXT:`` marker; markers in the bytes trigger faults.

    ``%FAULT:crash`` fails like a killed child (retryable), ``%FAULT:encrypted``
    and ``%FAULT:corrupt`` fail permanently, ``%FAULT:slow`` sleeps a second a page.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.started = False

    async def start(self) -> None:
        self.started = True

    def engines(self) -> list[str]:
        return ["rapidocr"]

    async def inspect(self, pdf: bytes) -> DocumentInfo:
        return DocumentInfo(pages=self._pages(pdf).__len__(), encrypted=b"%FAULT:encrypted" in pdf)

    def _pages(self, pdf: bytes) -> list[str]:
        marker = pdf.find(b"%TEXT:")
        body = pdf[marker + 6 :].decode("utf-8", "replace") if marker >= 0 else "sem texto"
        return [p.strip() for p in body.split("%PAGE") if p.strip()] or ["sem texto"]

    async def extract(
        self, pdf: bytes, options: ExtractOptions, progress: ProgressCallback | None = None
    ) -> ExtractionResult:
        self.calls += 1
        if b"%FAULT:crash" in pdf:
            raise ResourceLimit("the child process died")
        if b"%FAULT:encrypted" in pdf:
            raise EncryptedPdf()
        if b"%FAULT:corrupt" in pdf:
            raise CorruptPdf()
        texts = self._pages(pdf)
        pages = []
        for i, text in enumerate(texts, start=1):
            if b"%FAULT:slow" in pdf:
                await asyncio.sleep(1.0)
            lines = [
                Line(t, 0.99, (10.0, 10.0 + 12 * n, 200.0, 20.0 + 12 * n)) for n, t in enumerate(text.splitlines())
            ]
            pages.append(Page(number=i, source="text_layer", text=text, confidence=1.0, lines=lines))
            if progress:
                await progress(i, len(texts))
        return ExtractionResult(pages=pages, engine="fake")

    async def close(self) -> None:
        self.started = False


def fake_pdf(text: str, *faults: str) -> bytes:
    """Bytes that pass the PDF sniffing and carry ``text`` for the fake extractor."""
    marks = "".join(f"%FAULT:{f}\n" for f in faults)
    return f"%PDF-1.7\n{marks}%TEXT:{text}".encode()


@dataclass
class RecordingDelivery:
    """A queue delivery that records what the service did with it (ack, defer-hold, touch...)."""

    message: JobMessage
    deliveries: int = 1
    events: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.events.append("ack")

    async def retry(self, delay_s: float) -> None:
        self.events.append("retry")

    async def defer(self, delay_s: float, *, hold_tenant: bool = False) -> None:
        self.events.append("defer-hold" if hold_tenant else "defer")

    async def touch(self) -> None:
        self.events.append("touch")

    async def dead_letter(self, reason: str) -> None:
        self.events.append("dead")


class OfflineWebhookTransport:
    """A webhook transport that never touches the network: every host "resolves" to one public
    address, every delivery is recorded and answered 204."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> SendOutcome:
        self.posts.append((url, dict(headers), body))
        return SendOutcome(204, None, 1)
