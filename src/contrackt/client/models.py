"""What the Python client returns: small frozen dataclasses built from the API's JSON."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from contrackt.client.errors import ResultIntegrityError

BBox = tuple[float, float, float, float]  # PDF points, origin top-left of the page as displayed


def _bbox(value: Any) -> BBox:
    x0, y0, x1, y1 = (float(v) for v in value)
    return (x0, y0, x1, y1)


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float
    bbox: BBox

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Word:
        return cls(str(d["text"]), float(d["confidence"]), _bbox(d["bbox"]))


@dataclass(frozen=True)
class Line:
    text: str
    confidence: float
    bbox: BBox
    words: list[Word] = field(default_factory=list)  # lines read by OCR; empty for text-layer lines

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Line:
        words = [Word.from_json(w) for w in d.get("words") or []]
        return cls(str(d["text"]), float(d["confidence"]), _bbox(d["bbox"]), words)


@dataclass(frozen=True)
class Page:
    number: int
    source: str  # "text_layer" or "ocr"
    text: str
    confidence: float
    lines: list[Line]
    zoom: float | None = None
    rotation: int = 0

    @property
    def words(self) -> list[Word]:
        """Every word of the page, in reading order (OCR lines only)."""
        return [w for line in self.lines for w in line.words]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Page:
        return cls(
            number=int(d["number"]),
            source=str(d["source"]),
            text=str(d["text"]),
            confidence=float(d["confidence"]),
            lines=[Line.from_json(ln) for ln in d.get("lines") or []],
            zoom=d.get("zoom"),
            rotation=int(d.get("rotation") or 0),
        )


@dataclass(frozen=True)
class Result:
    """A job's result. ``format`` is what was asked for: with ``json`` every field is filled; with
    ``text`` only ``text``; with another format (one this client does not parse) only ``content``.
    ``content`` is always the body exactly as received. ``document_sha256`` is known when the
    result came from ``extract`` (the API says it at submission)."""

    job_id: str
    format: str
    media_type: str
    content: bytes
    text: str = ""
    pages: list[Page] = field(default_factory=list)
    confidence_avg: float | None = None
    active_content: list[str] = field(default_factory=list)
    result_sha256: str | None = None
    document_sha256: str | None = None

    @property
    def words(self) -> list[Word]:
        return [w for page in self.pages for w in page.words]

    @classmethod
    def from_body(
        cls, job_id: str, format: str, media_type: str, content: bytes, document_sha256: str | None = None
    ) -> Result:
        if format == "json":
            body = json.loads(content)
            check_digest(job_id, body)
            return cls(
                job_id=str(body.get("job_id") or job_id),
                format=format,
                media_type=media_type,
                content=content,
                text=str(body["text"]),
                pages=[Page.from_json(p) for p in body["pages"]],
                confidence_avg=body.get("confidence_avg"),
                active_content=list(body.get("active_content") or []),
                result_sha256=body.get("result_sha256"),
                document_sha256=document_sha256,
            )
        text = content.decode("utf-8") if media_type.startswith("text/") else ""
        return cls(job_id, format, media_type, content, text=text, document_sha256=document_sha256)


def check_digest(job_id: str, body: dict[str, Any]) -> None:
    """``result_sha256`` is the SHA-256 of ``json.dumps(body without it, sort_keys=True,
    ensure_ascii=False)``; a mismatch means the body was altered on the way."""
    claimed = body.get("result_sha256")
    if claimed is None:
        return
    rest = {k: v for k, v in body.items() if k != "result_sha256"}
    actual = hashlib.sha256(json.dumps(rest, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    if actual != claimed:
        raise ResultIntegrityError(
            "The result does not match its result_sha256", code="result_integrity", job_id=job_id
        )


@dataclass(frozen=True)
class Job:
    """The view of ``GET /v1/jobs/{id}`` (and of each item of ``GET /v1/jobs``)."""

    job_id: str
    status: str  # pending | processing | completed | failed
    pages_total: int | None
    pages_done: int
    error: dict[str, Any] | None
    created_at: datetime | None
    completed_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Job:
        return cls(
            job_id=str(d["job_id"]),
            status=str(d["status"]),
            pages_total=d.get("pages_total"),
            pages_done=int(d.get("pages_done") or 0),
            error=d.get("error"),
            created_at=_when(d.get("created_at")),
            completed_at=_when(d.get("completed_at")),
        )


@dataclass(frozen=True)
class Submission:
    """The answer to a submission: the job's id and status, and the document's SHA-256."""

    job_id: str
    status: str
    document_sha256: str | None
    links: dict[str, str]
    error: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Submission:
        return cls(
            job_id=str(d["job_id"]),
            status=str(d["status"]),
            document_sha256=d.get("document_sha256"),
            links=dict(d.get("links") or {}),
            error=d.get("error"),
            raw=d,
        )


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class UsageDay:
    day: date
    pages: dict[str, int]  # by source ("text_layer", "ocr", ...) and "total"
    jobs_completed: int
    jobs_failed: int
    failed_by_code: dict[str, int]

    @classmethod
    def from_json(cls, d: dict[str, Any], day: date) -> UsageDay:
        jobs = d["jobs"]
        return cls(
            day=day,
            pages={str(k): int(v) for k, v in d["pages"].items()},
            jobs_completed=int(jobs["completed"]),
            jobs_failed=int(jobs["failed"]),
            failed_by_code={str(k): int(v) for k, v in jobs["failed_by_code"].items()},
        )


@dataclass(frozen=True)
class Usage:
    start: date
    end: date
    days: list[UsageDay]
    totals: UsageDay  # its ``day`` is ``start``

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Usage:
        start, end = date.fromisoformat(d["from"]), date.fromisoformat(d["to"])
        days = [UsageDay.from_json(x, date.fromisoformat(x["date"])) for x in d["days"]]
        return cls(start, end, days, UsageDay.from_json(d["totals"], start))
